//! Requests whose answers are data: resource lists, aggregated discovery, Table views,
//! outcomes of authorization probes, CRUD round trips. A leaf of `check/`.

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::error::{Error, Result};

async fn get_json(client: &Client, path: &str, accept: Option<&str>) -> Result<Value> {
    let mut request = http::Request::get(path);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let request = request.body(Vec::new()).map_err(|e| Error::Client(Box::new(e)))?;
    let text = client.request_text(request).await.map_err(|source| Error::Request {
        what: format!("GET {path}"),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        what: format!("GET {path}"),
        source,
    })
}

/// `GET /apis/<group>/<version>` (`/api/v1` for the core group), resources sorted by name so
/// the snapshot does not depend on the server's order.
///
/// # Errors
/// [`Error::Kube`] when the request fails (503 while an APIService is unavailable, say).
pub async fn resource_list(client: &Client, group: &str, version: &str) -> Result<Value> {
    let path = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut list = get_json(client, &path, None).await?;
    if let Some(resources) = list.get_mut("resources").and_then(Value::as_array_mut) {
        resources.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_owned());
    }
    Ok(list)
}

/// The entry for `group` in aggregated discovery (`/apis` as
/// `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`), as kubectl reads it.
///
/// # Errors
/// [`Error::Kube`], or [`Error::Fixture`] if the group is not listed.
pub async fn aggregated_discovery_group(client: &Client, group: &str) -> Result<Value> {
    let list = get_json(
        client,
        "/apis",
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
    )
    .await?;
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == group))
        .cloned()
        .ok_or_else(|| Error::Fixture(format!("group {group} is not in aggregated discovery")))
}

/// The Table view of a list path (`kubectl get` asks for it with
/// `application/json;as=Table;g=meta.k8s.io;v=v1`): column names and row cells.
///
/// # Errors
/// [`Error::Kube`].
pub async fn table(client: &Client, path: &str) -> Result<Value> {
    let table = get_json(client, path, Some("application/json;as=Table;g=meta.k8s.io;v=v1")).await?;
    let columns: Vec<Value> = table["columnDefinitions"]
        .as_array()
        .map(|cols| cols.iter().map(|c| c["name"].clone()).collect())
        .unwrap_or_default();
    let rows: Vec<Value> = table["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["cells"].clone()).collect())
        .unwrap_or_default();
    Ok(json!({"columns": columns, "rows": rows}))
}

/// What a request got: `(code, "Reason: message")`, `(200, "OK")` on success. Transport errors
/// are `(0, description)`.
///
/// ```no_run
/// # async fn wrapper() -> kube_harness::Result<()> {
/// use k8s_openapi::api::core::v1::Secret;
/// let cluster = kube_harness::shared().await?;
/// let alice = kube::Api::<Secret>::namespaced(cluster.user("alice", &[]).await?, "default");
/// let (code, message) = kube_harness::check::outcome(alice.list(&Default::default()).await);
/// assert_eq!(code, 403, "{message}");
/// # Ok(()) }
/// ```
pub fn outcome<T>(result: std::result::Result<T, kube::Error>) -> (u16, String) {
    match result {
        Ok(_) => (200, "OK".to_owned()),
        Err(kube::Error::Api(s)) => (s.code, format!("{}: {}", s.reason, s.message)),
        Err(e) => (0, format!("transport error: {e}")),
    }
}

/// May `client` list `resource` in `namespace` (or, with `None`, across the cluster — for
/// cluster-scoped resources)? The probe of an RBAC matrix.
pub async fn probe_list(client: &Client, namespace: Option<&str>, resource: &ApiResource) -> (u16, String) {
    probe_list_once_bound(client, namespace, resource, std::time::Duration::ZERO).await
}

/// RBAC changes reach kube-apiserver's authorizer (and an extension server's
/// SubjectAccessReviews) through an informer, a moment after the binding is written. Retry
/// `attempt` every 50 ms while it answers 403, for up to `timeout`; return the first other
/// result, or the last 403.
///
/// # Errors
/// Whatever `attempt` returned last.
///
/// `attempt` may be an async closure, which may borrow what it creates:
/// `retry_while_forbidden(timeout, async || api.list(&ListParams::default()).await)`; a
/// closure returning a future (`|| api.list(&lp)`) works too.
pub async fn retry_while_forbidden<T, F>(
    timeout: std::time::Duration,
    mut attempt: F,
) -> std::result::Result<T, kube::Error>
where
    F: AsyncFnMut() -> std::result::Result<T, kube::Error>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match attempt().await {
            Err(kube::Error::Api(s)) if s.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// [`probe_list`] retried with [`retry_while_forbidden`]: for probing right after a binding.
pub async fn probe_list_once_bound(
    client: &Client,
    namespace: Option<&str>,
    resource: &ApiResource,
    timeout: std::time::Duration,
) -> (u16, String) {
    let api = match namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, resource),
        None => Api::<DynamicObject>::all_with(client.clone(), resource),
    };
    let lp = ListParams::default();
    outcome(retry_while_forbidden(timeout, || api.list(&lp)).await)
}

/// A failed request as data: `{code, reason, message}`; a success where a failure was expected
/// is recorded as `{unexpected_success: …}`.
pub fn status_record(result: std::result::Result<DynamicObject, kube::Error>) -> Value {
    match result {
        Ok(o) => json!({"unexpected_success": o}),
        Err(kube::Error::Api(s)) => json!({"code": s.code, "reason": s.reason, "message": s.message}),
        Err(e) => json!({"transport_error": e.to_string()}),
    }
}

/// One object's CRUD round trip.
#[derive(Debug, Clone)]
pub struct CrudCase {
    /// The object to create (with `metadata.name`).
    pub object: Value,
    /// A merge patch that changes a field.
    pub change: Value,
    /// An object the server must reject (422), if it validates one.
    pub invalid: Option<Value>,
}

/// Create, create again (409), get, list, update (a label), merge patch, server-side apply (an
/// annotation), create an invalid object, delete, get (404): every answer in one record, in
/// that order of keys. Checks that need the object to exist (a Table view, say) run before this.
///
/// Creation is retried for up to 20 s while the server answers 403 "not yet ready" (upstream
/// sample-apiserver's admission plugin does until its informer has synced).
///
/// # Errors
/// [`Error::Kube`] when a step that must succeed fails; [`Error::Json`] for a bad case.
pub async fn crud_round_trip(api: &Api<DynamicObject>, case: &CrudCase) -> Result<Value> {
    let json_err = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Json { what, source }
    };
    let obj: DynamicObject = serde_json::from_value(case.object.clone()).map_err(json_err("CRUD object"))?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let pp = PostParams::default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let created = loop {
        match api.create(&pp, &obj).await {
            Err(kube::Error::Api(s)) if s.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let duplicate = status_record(api.create(&pp, &obj).await);
    let got = api.get(&name).await?;
    if got.data != created.data {
        return Err(Error::Fixture(format!(
            "{name}: get returned other content than create"
        )));
    }
    let listed = api.list(&ListParams::default()).await?;
    if !listed
        .items
        .iter()
        .any(|o| o.metadata.name.as_deref() == Some(name.as_str()))
    {
        return Err(Error::Fixture(format!("{name}: created but not listed")));
    }
    let mut replacement = got;
    replacement.metadata.labels = Some([("updated".to_owned(), "yes".to_owned())].into());
    let updated = api.replace(&name, &pp, &replacement).await?;
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&case.change))
        .await?;
    let mut applied_body = case.object.clone();
    if let Some(meta) = applied_body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("annotations".into(), json!({"applied": "yes"}));
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("kube-harness-check").force(),
            &Patch::Apply(&applied_body),
        )
        .await?;
    let invalid = match &case.invalid {
        Some(bad) => {
            let bad: DynamicObject = serde_json::from_value(bad.clone()).map_err(json_err("invalid CRUD object"))?;
            status_record(api.create(&pp, &bad).await)
        }
        None => Value::Null,
    };
    Ok(json!({
        "created": created,
        "duplicate_create": duplicate,
        "updated": updated,
        "merge_patched": patched,
        "server_side_applied": applied,
        "invalid_create": invalid,
        "get_after_delete": Value::Null,
    }))
}

/// The end of a round trip: delete, then record what a get answers (404 expected).
///
/// # Errors
/// [`Error::Kube`] if the delete fails.
pub async fn delete_and_get(api: &Api<DynamicObject>, name: &str, record: &mut Value) -> Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    record["get_after_delete"] = status_record(api.get(name).await);
    Ok(())
}

/// A client for a user (with groups: a client certificate where the cluster's CA is the
/// harness's, else impersonation), a ServiceAccount `namespace/name` (a TokenRequest token;
/// created if missing), or the admin when neither is given.
pub(super) async fn client_as(
    cluster: &crate::Cluster,
    user: Option<&str>,
    groups: &[String],
    service_account: Option<&str>,
) -> std::result::Result<Client, String> {
    let built = match (user, service_account) {
        (Some(user), _) => {
            cluster
                .user(user, &groups.iter().map(String::as_str).collect::<Vec<_>>())
                .await
        }
        (None, Some(sa)) => {
            let (ns, name) = sa.split_once('/').unwrap_or_default();
            match cluster.service_account_token(ns, name, 3600).await {
                Ok(token) => cluster.token_client(&token).await,
                Err(e) => Err(e),
            }
        }
        (None, None) => cluster.client().await,
    };
    built.map_err(|e| format!("no client for the identity: {e}"))
}
