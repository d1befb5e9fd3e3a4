//! Nodes on the local plane (`ControlPlane::with_nodes`): kube-scheduler binds Pods to kwok's
//! fake Nodes and kwok runs them through its fast stages. Proved with the workloads operators
//! create — a Pod watched until Running and ContainersReady then deleted (as kube-rs's own
//! `pod_can_await_conditions`), Deployments Available, StatefulSets ready, Jobs complete,
//! DaemonSets one Pod per node — a Pod nothing can schedule left Pending with the scheduler's
//! event, bad input refused, and a killed kwok reported.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use kube_harness::{Capability, Cluster, ControlPlane, Error};
use serde_json::json;

async fn plane(nodes: u32) -> anyhow::Result<Cluster> {
    let cluster = ControlPlane::builder().with_nodes(nodes).start().await?;
    anyhow::ensure!(cluster.has(Capability::RunsPods), "a plane with nodes must run pods");
    Ok(cluster)
}

fn pod(name: &str, extra: serde_json::Value) -> anyhow::Result<Pod> {
    let mut spec = json!({"containers": [{"name": "main", "image": "busybox:stable", "command": ["sleep", "3600"]}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

/// What kube-rs's `pod_can_await_conditions` does, which fails on a plane without nodes.
#[tokio::test]
async fn a_pod_is_running_and_ready_and_its_deletion_finishes() -> anyhow::Result<()> {
    let cluster = plane(1).await?;
    let ns = cluster.test_namespace("pod").await?;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod("busybox", json!({}))?).await?;
    let running = tokio::time::timeout(
        Duration::from_secs(15),
        await_condition(pods.clone(), "busybox", conditions::is_pod_running()),
    )
    .await??;
    let running = running.ok_or_else(|| anyhow::anyhow!("the pod went away"))?;
    let status = running.status.unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    assert!(ready("ContainersReady") && ready("Ready"), "{:?}", status.conditions);
    assert!(status.pod_ip.is_some(), "kwok gives a Pod an IP");
    let node = running.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(node.starts_with("kwok-node-"), "bound to {node:?}");
    // Pods run, simulated: a test that needs a container (logs, exec) is told to use kind.
    assert!(ran_with(&cluster, Capability::RunsPods).await?);
    let reason = cluster.lacks(Capability::RunsContainers).unwrap_or_default();
    assert!(
        reason.contains("no logs, exec") && reason.contains("KUBE_HARNESS_PROVIDER=kind"),
        "{reason}"
    );
    assert!(!ran_with(&cluster, Capability::RunsContainers).await?);

    let uid = running.metadata.uid.unwrap_or_default();
    pods.delete("busybox", &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(15),
        await_condition(pods.clone(), "busybox", conditions::is_deleted(&uid)),
    )
    .await??;
    Ok(())
}

async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, done: F) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&K) -> bool + Send + 'static,
{
    tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&done)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{name}: not {what} within 20 s"))??;
    Ok(())
}

#[tokio::test]
async fn deployments_statefulsets_jobs_and_daemonsets_complete() -> anyhow::Result<()> {
    let cluster = plane(2).await?;
    let ns = cluster.test_namespace("workloads").await?;
    let template = json!({
        "metadata": {"labels": {"app": "w"}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1"}]},
    });
    let selector = json!({"matchLabels": {"app": "w"}});
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": selector, "template": template}}))?,
        )
        .await?;
    let statefulsets: Api<StatefulSet> = ns.api();
    statefulsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db", "selector": selector, "template": template}}))?,
        )
        .await?;
    let daemonsets: Api<DaemonSet> = ns.api();
    daemonsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "agent"}, "spec": {"selector": selector, "template": template}}),
            )?,
        )
        .await?;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "once"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:stable", "command": ["true"]}],
        }}}}))?,
    )
    .await?;

    wait_for(
        &deployments,
        "web",
        "Available with 3 ready replicas",
        |d: &Deployment| {
            let s = d.status.clone().unwrap_or_default();
            s.ready_replicas == Some(3)
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
        },
    )
    .await?;
    wait_for(&statefulsets, "db", "with 2 ready replicas", |s: &StatefulSet| {
        s.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
    })
    .await?;
    wait_for(&daemonsets, "agent", "ready on both nodes", |d: &DaemonSet| {
        d.status
            .as_ref()
            .is_some_and(|s| s.desired_number_scheduled == 2 && s.number_ready == 2)
    })
    .await?;
    wait_for(&jobs, "once", "Complete", |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
    })
    .await?;
    let agents = ns.api::<Pod>().list(&ListParams::default().labels("app=w")).await?;
    let mut nodes: Vec<String> = agents
        .items
        .iter()
        .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("agent-")))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["kwok-node-0", "kwok-node-1"], "one DaemonSet Pod per node");
    Ok(())
}

#[tokio::test]
async fn a_pod_nothing_can_schedule_stays_pending_with_the_schedulers_event() -> anyhow::Result<()> {
    let cluster = plane(1).await?;
    let ns = cluster.test_namespace("pending").await?;
    let pods: Api<Pod> = ns.api();
    let huge =
        json!({"containers": [{"name": "main", "image": "busybox:stable", "resources": {"requests": {"cpu": "64"}}}]});
    pods.create(&PostParams::default(), &pod("huge", huge)?).await?;
    let events: Api<Event> = ns.api();
    let mut message = None;
    for _ in 0..200 {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=huge,reason=FailedScheduling"))
            .await?;
        if let Some(e) = list.items.into_iter().next() {
            message = e.message;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = message.ok_or_else(|| anyhow::anyhow!("no FailedScheduling event within 10 s"))?;
    assert!(message.contains("Insufficient cpu"), "{message}");
    let status = pods.get("huge").await?.status.unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    Ok(())
}

#[tokio::test]
async fn bad_node_counts_and_nodes_without_controllers_are_refused() -> anyhow::Result<()> {
    let too_many = ControlPlane::builder().with_nodes(101).start().await;
    assert!(
        matches!(&too_many, Err(Error::Provider(m)) if m.contains("at most 100 nodes")),
        "{too_many:?}"
    );
    let without = ControlPlane::builder()
        .without_controller_manager()
        .with_nodes(1)
        .start()
        .await;
    assert!(
        matches!(&without, Err(Error::Provider(m)) if m.contains("node-lifecycle-controller")),
        "{without:?}"
    );
    let none = ControlPlane::builder().with_nodes(0).start().await?;
    let reason = none.lacks(Capability::RunsPods).unwrap_or_default();
    assert!(
        reason.contains("Pods stay Pending") && reason.contains("KUBE_HARNESS_NODES=1") && reason.contains("kind"),
        "{reason}"
    );
    assert!(
        !ran_with(&none, Capability::RunsPods).await?,
        "skip_unless! let the test on"
    );
    Ok(())
}

/// Whether a test guarded by `skip_unless!(cluster, capability)` got past the guard.
async fn ran_with(cluster: &Cluster, capability: Capability) -> anyhow::Result<bool> {
    async fn guarded(cluster: &Cluster, capability: Capability, ran: &mut bool) -> anyhow::Result<()> {
        kube_harness::skip_unless!(cluster, capability);
        *ran = true;
        Ok(())
    }
    let mut ran = false;
    guarded(cluster, capability, &mut ran).await?;
    Ok(ran)
}

/// kwok dies mid-test: `Cluster::watch` names it with its log within a second, and dropping
/// the cluster leaves no process of it behind.
#[tokio::test]
async fn a_killed_kwok_is_reported_and_nothing_outlives_the_cluster() -> anyhow::Result<()> {
    let cluster = plane(1).await?;
    let pids = cluster.pids();
    assert_eq!(
        pids.len(),
        5,
        "kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok: {pids:?}"
    );
    let kwok = *pids.last().unwrap_or(&0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(kwok)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let client: Client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let watched = tokio::time::timeout(
        Duration::from_secs(5),
        cluster.watch(async {
            loop {
                let _ = pods.list(&ListParams::default()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }),
    )
    .await?;
    let err = watched.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("kwok"), "{err}");
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
            "pid {pid} outlived the cluster"
        );
    }
    Ok(())
}
