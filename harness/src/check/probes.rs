//! Probes of what a target serves: each APIService Available and listed in both discovery
//! documents, each CRD Established, and each served group/version's resource list (once per
//! group/version, however many CRDs share it).

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::{Api, Client};

use super::result::Recorder;
use crate::target::apply::available_condition;

pub(super) async fn apiservice_checks(rec: &mut Recorder, client: &Client, name: &str) {
    let t = Instant::now();
    let svc = match Api::<APIService>::all(client.clone()).get(name).await {
        Ok(s) => s,
        Err(e) => {
            rec.record(format!("APIService {name} Available"), t, Err(e.to_string()));
            return;
        }
    };
    let condition = available_condition(&svc).unwrap_or_default();
    let available = match &condition {
        (s, r, m) if s == "True" => Ok(format!("{r}: {m}")),
        (s, r, m) => Err(format!("Available={s} {r}: {m}")),
    };
    rec.record(format!("APIService {name} Available"), t, available);
    let spec = svc.spec.unwrap_or_default();
    let (group, version) = (spec.group.unwrap_or_default(), spec.version.unwrap_or_default());
    let gv = format!("{group}/{version}");

    let t = Instant::now();
    let legacy = match client.list_api_groups().await {
        Ok(groups)
            if groups
                .groups
                .iter()
                .any(|g| g.name == group && g.versions.iter().any(|v| v.version == version)) =>
        {
            Ok("listed".to_owned())
        }
        Ok(_) => Err(format!("{gv} is not listed in /apis")),
        Err(e) => Err(e.to_string()),
    };
    rec.record(format!("{gv} in /apis"), t, legacy);

    let t = Instant::now();
    let v2 = match super::queries::aggregated_discovery_group(client, &group).await {
        Ok(entry)
            if entry["versions"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v["version"] == version.as_str())) =>
        {
            Ok("listed".to_owned())
        }
        Ok(_) => Err(format!("{gv} is not listed in aggregated discovery")),
        Err(e) => Err(e.to_string()),
    };
    rec.record(format!("{gv} in aggregated discovery"), t, v2);
    resource_list_check(rec, client, &group, &version).await;
}

async fn resource_list_check(rec: &mut Recorder, client: &Client, group: &str, version: &str) {
    let t = Instant::now();
    let (outcome, data) = match super::queries::resource_list(client, group, version).await {
        Ok(list) => {
            let names: Vec<&str> = list["resources"]
                .as_array()
                .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
                .unwrap_or_default();
            (Ok(format!("resources: {}", names.join(", "))), Some(list))
        }
        Err(e) => (Err(e.to_string()), None),
    };
    rec.record(format!("{group}/{version} resource list"), t, outcome);
    rec.attach(data);
}

pub(super) async fn crd_checks(
    rec: &mut Recorder,
    client: &Client,
    name: &str,
    listed: &mut BTreeSet<(String, String)>,
) {
    let t = Instant::now();
    let crd = match Api::<CustomResourceDefinition>::all(client.clone()).get(name).await {
        Ok(c) => c,
        Err(e) => {
            rec.record(format!("CRD {name} Established"), t, Err(e.to_string()));
            return;
        }
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    let outcome = if established {
        Ok("Established".to_owned())
    } else {
        Err("not Established".to_owned())
    };
    rec.record(format!("CRD {name} Established"), t, outcome);
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        if listed.insert((crd.spec.group.clone(), version.name.clone())) {
            resource_list_check(rec, client, &crd.spec.group, &version.name).await;
        }
    }
}
