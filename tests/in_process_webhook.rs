//! An admission webhook served by the test itself: an axum handler using kube's admission
//! types, served by `WebhookServer` on a harness-issued loopback certificate, with the
//! configuration from `tests/in-process-webhook/` pointed at it — envtest's
//! `WebhookInstallOptions`, for an operator's webhook code without a separate binary.

use axum::Json;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube_harness::webhook::WebhookServer;

/// The operator's handler: ConfigMaps whose name starts with `bad-` are refused.
async fn validate(Json(review): Json<AdmissionReview<DynamicObject>>) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e.to_string()).into_review()),
    };
    let response = AdmissionResponse::from(&request);
    let response = if request.name.starts_with("bad-") {
        response.deny(format!("{} is a bad name", request.name))
    } else {
        response
    };
    Json(response.into_review())
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_webhook_served_by_the_test_refuses_what_its_handler_refuses() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let client = cluster.client().await?;
    let namespace = Namespace {
        metadata: ObjectMeta {
            generate_name: Some("in-process-webhook-".into()),
            labels: Some([("kube-harness.dev/in-process-webhook".to_owned(), "yes".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ns = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?
        .metadata
        .name
        .unwrap_or_default();

    let router = axum::Router::new().route("/validate-configmaps", axum::routing::post(validate));
    let server = WebhookServer::start(router).await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/in-process-webhook");
    let installed = server.install(cluster, &dir).await?;
    assert_eq!(
        installed.names(),
        ["ValidatingWebhookConfiguration/in-process-configmaps"]
    );

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    config_maps
        .create(&PostParams::default(), &config_map("good-one"))
        .await?;
    let refused = config_maps.create(&PostParams::default(), &config_map("bad-one")).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400, "{status:?}");
            assert_eq!(
                status.message,
                "admission webhook \"configmaps.in-process.kube-harness.dev\" denied the request: bad-one is a bad name"
            );
        }
        other => anyhow::bail!("expected the handler's denial, got {other:?}"),
    }

    // Uninstalled, the same create is admitted, and nothing of the configuration is left.
    installed.uninstall().await?;
    // kube-apiserver's webhook informer learns of the deletion a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config_maps
            .create(&PostParams::default(), &config_map("bad-after"))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 400 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other.map(drop)?,
        }
    }
    let configs: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        )),
    );
    assert!(configs.get_opt("in-process-configmaps").await?.is_none());
    drop(server);
    Api::<Namespace>::all(client).delete(&ns, &Default::default()).await?;
    Ok(())
}
