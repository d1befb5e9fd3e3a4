//! A target's backend in the cluster, on providers that run pods and cannot reach host
//! processes (kind): the same target directory, deployed as users deploy their servers.
//!
//! From the target's `backend` the harness makes:
//! - an **image**: the backend's binary (built as for the local plane) with the shared
//!   libraries it links (none for a static Go binary) in an otherwise empty image, imported
//!   into the local engine and loaded into the nodes (`kind load docker-image`);
//! - a **Secret** `kube-harness-backend` in the ServiceAccount's namespace: the issued
//!   certificates and a kubeconfig for the pod's own ServiceAccount token;
//! - a **Deployment** `<target>-backend` running as the target's `serviceAccount` (so the RBAC
//!   its `rbac.yaml` grants is all it has), its `args` expanded with in-cluster values, an etcd
//!   sidecar when the args use `{{etcdUrl}}`, an HTTPS readiness probe on `readinessPath`;
//! - the target's `ExternalName` Service for its APIServices becomes a **ClusterIP** Service
//!   selecting the Deployment's pods, port 443 to the backend's 8443.
//!
//! Placeholders in-cluster: `{{port}}` 8443, `{{bindAddress}}` 0.0.0.0 (127.0.0.1 on the local
//! plane), `{{etcdUrl}}` the sidecar, `{{certs.<name>.crt|key}}` files from the Secret,
//! `{{backendKubeconfig}}` the pod's identity, `{{server}}` the `kubernetes` Service,
//! `{{runDir}}` the pod's `/tmp`. The admin's `{{kubeconfig}}` and `{{kubectl}}` have no
//! in-cluster meaning and are refused with that reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::load::{Document, Source};
use super::{Target, spec};
use crate::Cluster;
use crate::error::{Error, Result};
use crate::pki::KeyedCert;

/// The port the backend listens on in its pod.
pub(crate) const POD_PORT: u16 = 8443;
/// Where the Secret is mounted.
const MOUNT: &str = "/kube-harness";
/// The Secret's name (one per ServiceAccount namespace and target).
fn secret_name(target: &str) -> String {
    format!("{target}-backend-files")
}
/// The Deployment's name.
pub(crate) fn deployment_name(target: &str) -> String {
    format!("{target}-backend")
}
/// The label that selects the backend's pods.
pub(crate) const SELECTOR: &str = "kube-harness.dev/backend";

/// What the harness deployed for a target.
#[derive(Debug, Clone)]
pub(crate) struct InClusterBackend {
    /// The namespace of the Deployment (the ServiceAccount's).
    pub namespace: String,
    /// The Deployment.
    pub deployment: String,
    /// The image it runs.
    pub image: String,
    /// Its args as deployed (a restart appends to them).
    pub args: Vec<String>,
    /// The target's `readinessLog`: ready once a pod's log holds it.
    pub readiness_log: Option<String>,
    /// The target's own Deployment manifest (not the harness's).
    pub own: bool,
}

/// The Deployment's namespace and ServiceAccount: from `serviceAccount`, required in-cluster.
fn identity(target: &Target, backend: &spec::Backend) -> Result<(String, String)> {
    backend
        .service_account
        .as_deref()
        .and_then(|sa| sa.split_once('/'))
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .ok_or_else(|| {
            Error::Fixture(format!(
                "target {}: a backend runs in the cluster as its serviceAccount (namespace/name), and this one names none",
                target.name
            ))
        })
}

/// Rewrite an `ExternalName` Service (how the local plane reaches host backends) into a
/// ClusterIP Service selecting the target's backend pods; other documents are unchanged.
pub(crate) fn in_cluster_service(doc: &Document, target: &str) -> Option<Document> {
    if doc.kind != "Service" || doc.api_version != "v1" {
        return None;
    }
    let spec = doc.value.get("spec")?;
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        return None;
    }
    let mut value = doc.value.clone();
    value["spec"] = json!({
        "type": "ClusterIP",
        "selector": {SELECTOR: target},
        "ports": [{"name": "https", "port": 443, "targetPort": POD_PORT, "protocol": "TCP"}],
    });
    Some(Document { value, ..doc.clone() })
}

fn document(work: &Path, index: usize, value: Value) -> Document {
    let text = |p: &str| value.pointer(p).and_then(Value::as_str).map(str::to_owned);
    Document {
        source: Source {
            file: work.join("in-cluster.yaml"),
            index,
        },
        api_version: text("/apiVersion").unwrap_or_default(),
        kind: text("/kind").unwrap_or_default(),
        name: text("/metadata/name").unwrap_or_default(),
        namespace: text("/metadata/namespace"),
        value,
    }
}

/// A file's SHA-256, short.
fn short_digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    Ok(digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// The shared libraries `binary` links (absolute paths, the loader included), from `ldd`;
/// none for a static binary.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(binary).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Build (once per binary content) the image `kube-harness/backend-<target>:<digest>`: the
/// binary as `/backend`, its shared libraries at their paths, `/tmp`, and a passwd with
/// nobody; imported into the local engine (nothing is pulled).
fn backend_image(target: &str, binary: &Path, work: &Path) -> Result<String> {
    let image = format!("kube-harness/backend-{target}:{}", short_digest(binary)?);
    if crate::provider::docker_image_present(&image) {
        return Ok(image);
    }
    let root = work.join("image-root");
    let _ = std::fs::remove_dir_all(&root);
    let copy = |from: &Path, to: &Path| -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        }
        std::fs::copy(from, to)
            .map(drop)
            .map_err(Error::io("copy into the image", from))
    };
    copy(binary, &root.join("backend"))?;
    for lib in shared_libraries(binary) {
        copy(&lib, &root.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    for (file, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/:/backend\nnobody:x:65534:65534:nobody:/:/backend\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/nsswitch.conf", "hosts: files dns\n"),
    ] {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        }
        std::fs::write(&path, text).map_err(Error::io("write", &path))?;
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(Error::io("create directory", &tmp))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(Error::io("chmod", &tmp))?;
    }
    let script = format!(
        "tar -C '{}' -c . | docker import --change 'ENTRYPOINT [\"/backend\"]' - '{image}' >/dev/null",
        root.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| Error::Provider(format!("cannot run docker import: {e}")))?;
    let _ = std::fs::remove_dir_all(&root);
    if !out.status.success() {
        return Err(Error::Provider(format!(
            "building the image {image} (docker import) failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(image)
}

impl Cluster {
    /// Deploy the target's backend in the cluster (see the module docs) and wait until its
    /// Deployment is available. Returns the documents applied (for teardown) and what runs.
    pub(super) async fn start_backend_in_cluster(
        &self,
        target: &Target,
        backend: &spec::Backend,
        certs: &BTreeMap<String, KeyedCert>,
        work: &Path,
    ) -> Result<(InClusterBackend, Vec<Document>)> {
        let (namespace, service_account) = identity(target, backend)?;
        let program = self.backend_program(target, backend).await?;
        let started = Instant::now();
        let image = {
            let (name, program, work) = (target.name.clone(), program.clone(), work.to_owned());
            crate::process::blocking("backend image", move || backend_image(&name, &program, &work)).await?
        };
        {
            let image = image.clone();
            let load = self.image_loader()?;
            crate::process::blocking("kind load", move || load(&image)).await?;
        }
        tracing::info!(%image, elapsed = ?started.elapsed(), "backend image built and loaded");
        let client = self.client().await?;
        let kubernetes: Service = Api::namespaced(client.clone(), "default").get("kubernetes").await?;
        let service_ip = kubernetes.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        let server = format!("https://{service_ip}:443");

        let mut vars = BTreeMap::new();
        vars.insert("port".to_owned(), POD_PORT.to_string());
        vars.insert("bindAddress".to_owned(), "0.0.0.0".to_owned());
        vars.insert("etcdUrl".to_owned(), "http://127.0.0.1:2379".to_owned());
        vars.insert("server".to_owned(), server.clone());
        vars.insert("backendKubeconfig".to_owned(), format!("{MOUNT}/kubeconfig"));
        vars.insert("runDir".to_owned(), "/tmp".to_owned());
        let mut files = BTreeMap::new();
        for (name, cert) in certs {
            vars.insert(format!("certs.{name}.crt"), format!("{MOUNT}/{name}.crt"));
            vars.insert(format!("certs.{name}.key"), format!("{MOUNT}/{name}.key"));
            files.insert(format!("{name}.crt"), cert.cert_pem.clone());
            files.insert(format!("{name}.key"), cert.key_pem.clone());
        }
        let refuse = |key: &str| {
            matches!(key, "kubeconfig" | "kubectl").then(|| {
                Error::Fixture(format!(
                    "target {}: {{{{{key}}}}} names a file on this host, which a backend in the cluster cannot read; \
                     use {{{{backendKubeconfig}}}} (the pod's own identity) instead",
                    target.name
                ))
            })
        };
        for template in backend.args.iter().chain(backend.env.values()) {
            for piece in super::spec::placeholders(template).map_err(Error::Fixture)? {
                if let super::spec::Piece::Key(key) = piece
                    && let Some(e) = refuse(key)
                {
                    return Err(e);
                }
            }
        }
        let args = backend
            .args
            .iter()
            .chain(&target.extra_backend_args)
            .map(|a| super::backend::expand(a, &vars))
            .collect::<Result<Vec<_>>>()?;
        let env: Vec<Value> = backend
            .env
            .iter()
            .map(|(name, value)| Ok(json!({"name": name, "value": super::backend::expand(value, &vars)?})))
            .collect::<Result<_>>()?;
        files.insert(
            "kubeconfig".to_owned(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: {server}\n    \
                 certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n\
                 users:\n- name: sa\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n\
                 contexts:\n- name: sa\n  context:\n    cluster: cluster\n    user: sa\n    namespace: {namespace}\n\
                 current-context: sa\n"
            ),
        );
        let mut deployed = InClusterBackend {
            namespace: namespace.clone(),
            deployment: deployment_name(&target.name),
            image: image.clone(),
            args,
            readiness_log: backend.readiness_log.clone(),
            own: false,
        };
        let etcd_image = if backend.uses_placeholder("etcdUrl") || backend.deployment.is_some() {
            Some(self.etcd_image(&client).await?)
        } else {
            None
        };
        let deployment_doc = match &backend.deployment {
            Some(file) => {
                let mut vars = vars.clone();
                vars.insert("image".into(), image.clone());
                vars.insert("backendFiles".into(), secret_name(&target.name));
                if let Some(etcd) = &etcd_image {
                    vars.insert("etcdImage".into(), etcd.clone());
                }
                own_deployment(target, file, &vars, &namespace, &service_account, &mut deployed)?
            }
            None => document(
                work,
                2,
                deployment(target, backend, &deployed, &service_account, env, etcd_image.as_deref()),
            ),
        };
        let docs = vec![
            document(
                work,
                0,
                json!({
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": service_account, "namespace": namespace},
                }),
            ),
            document(
                work,
                1,
                json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": secret_name(&target.name), "namespace": namespace},
                    "stringData": files,
                }),
            ),
            deployment_doc,
        ];
        Ok((deployed, docs))
    }

    /// The etcd image the cluster's own etcd runs (present on the node, so nothing is
    /// pulled).
    async fn etcd_image(&self, client: &kube::Client) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let list = pods.list(&ListParams::default().labels("component=etcd")).await?;
        list.items
            .iter()
            .find_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .ok_or_else(|| {
                Error::Provider(
                    "a backend uses {{etcdUrl}}, and this cluster has no etcd pod whose image could run beside it"
                        .into(),
                )
            })
    }

    /// Wait until the backend's Deployment is available; the error says why not (pods,
    /// events, log tails).
    pub(super) async fn wait_backend_in_cluster(&self, deployed: &InClusterBackend, timeout: Duration) -> Result<()> {
        let client = self.client().await?;
        let (namespace, name) = (&deployed.namespace, &deployed.deployment);
        match &deployed.readiness_log {
            // No probe to make it unready: ready once it says so (and not crashing).
            Some(text) => crate::cluster::workloads::wait_deployment_log(&client, namespace, name, text, timeout).await,
            None => crate::cluster::workloads::wait_deployment(&client, namespace, name, timeout).await,
        }
    }

    /// Scale the backend's Deployment to `replicas` (0: the backend is down, as a fault), with
    /// `args` (a restart with a fault flag).
    pub(crate) async fn scale_backend_in_cluster(
        &self,
        deployed: &InClusterBackend,
        replicas: i32,
        args: &[String],
    ) -> Result<()> {
        if deployed.own && !args.is_empty() {
            return Err(Error::Fixture(format!(
                "Deployment {}/{} is the target's own: restarting it with other arguments is for the Deployment the harness makes",
                deployed.namespace, deployed.deployment
            )));
        }
        let client = self.client().await?;
        let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, &deployed.namespace);
        let patch = if deployed.own {
            json!({"spec": {"replicas": replicas}})
        } else {
            json!({"spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "backend", "args": args}]}}}})
        };
        api.patch(&deployed.deployment, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }
}

/// The target's own Deployment manifest (`backend.deployment`), its placeholders expanded: in
/// the ServiceAccount's namespace unless it names one, running as that ServiceAccount unless
/// it names one, its pods labelled for the target's ClusterIP Service.
fn own_deployment(
    target: &Target,
    file: &str,
    vars: &BTreeMap<String, String>,
    namespace: &str,
    service_account: &str,
    deployed: &mut InClusterBackend,
) -> Result<Document> {
    let path = target.dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    let expanded =
        super::backend::expand(&text, vars).map_err(|e| Error::Fixture(format!("{}: {e}", path.display())))?;
    let mut docs = super::load::parse_documents(&path, &expanded)?;
    let mut doc = match (docs.pop(), docs.is_empty()) {
        (Some(doc), true) if doc.kind == "Deployment" && doc.api_version == "apps/v1" => doc,
        _ => {
            return Err(Error::Fixture(format!(
                "{}: backend.deployment must hold one apps/v1 Deployment, the backend's",
                path.display()
            )));
        }
    };
    let value = &mut doc.value;
    if value.pointer("/metadata/namespace").is_none() {
        value["metadata"]["namespace"] = Value::String(namespace.to_owned());
    }
    let pod = &mut value["spec"]["template"];
    pod["metadata"]["labels"][SELECTOR] = Value::String(target.name.clone());
    if pod.pointer("/spec/serviceAccountName").is_none() {
        pod["spec"]["serviceAccountName"] = Value::String(service_account.to_owned());
    }
    doc.namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    deployed.namespace = doc.namespace.clone().unwrap_or_else(|| namespace.to_owned());
    deployed.deployment = doc.name.clone();
    // Its own containers: a restart with extra arguments needs the harness's Deployment.
    deployed.args.clear();
    deployed.own = true;
    Ok(doc)
}

/// The backend's Deployment.
fn deployment(
    target: &Target,
    backend: &spec::Backend,
    deployed: &InClusterBackend,
    service_account: &str,
    env: Vec<Value>,
    etcd_image: Option<&str>,
) -> Value {
    let mut container = json!({
        "name": "backend",
        "image": deployed.image,
        "imagePullPolicy": "IfNotPresent",
        "args": deployed.args,
        "env": env,
        "ports": [{"name": "https", "containerPort": POD_PORT}],
        "volumeMounts": [{"name": "files", "mountPath": MOUNT, "readOnly": true}],
    });
    if backend.probes() {
        container["readinessProbe"] = json!({
            "httpGet": {
                "scheme": backend.readiness_scheme.as_deref().unwrap_or("https").to_ascii_uppercase(),
                "port": backend.readiness_port.unwrap_or(POD_PORT),
                "path": backend.readiness_path.as_deref().unwrap_or("/readyz"),
            },
            "periodSeconds": 1,
            "failureThreshold": 3,
        });
    }
    let mut containers = vec![container];
    if let Some(image) = etcd_image {
        containers.push(json!({
            "name": "etcd",
            "image": image,
            "imagePullPolicy": "Never",
            "command": ["etcd", "--data-dir=/tmp/etcd", "--listen-client-urls=http://127.0.0.1:2379",
                        "--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380"],
        }));
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployed.deployment, "namespace": deployed.namespace, "labels": {SELECTOR: target.name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {SELECTOR: target.name}},
            "template": {
                "metadata": {"labels": {SELECTOR: target.name}},
                "spec": {
                    "serviceAccountName": service_account,
                    "terminationGracePeriodSeconds": 2,
                    "containers": containers,
                    "volumes": [{"name": "files", "secret": {"secretName": secret_name(&target.name)}}],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(value: Value) -> Document {
        document(Path::new("/w"), 0, value)
    }

    #[test]
    fn an_external_name_service_becomes_a_cluster_ip_for_the_backend() {
        let external = doc(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "wardle"},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }));
        let service = in_cluster_service(&external, "wardle").map(|d| d.value);
        assert_eq!(
            service.as_ref().and_then(|v| v.get("spec")),
            Some(&json!({
                "type": "ClusterIP",
                "selector": {"kube-harness.dev/backend": "wardle"},
                "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}],
            }))
        );
        let cluster_ip =
            doc(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": []}}));
        assert!(
            in_cluster_service(&cluster_ip, "wardle").is_none(),
            "other Services stay"
        );
        let config_map = doc(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}));
        assert!(in_cluster_service(&config_map, "wardle").is_none());
    }

    #[test]
    fn ldd_output_gives_library_paths() {
        // A static binary has none (this test's own binary is dynamic on glibc hosts).
        let libs = shared_libraries(Path::new("/nonexistent"));
        assert!(libs.is_empty());
        if let Ok(me) = std::env::current_exe() {
            for lib in shared_libraries(&me) {
                assert!(lib.is_absolute() && lib.exists(), "{lib:?}");
            }
        }
    }
}
