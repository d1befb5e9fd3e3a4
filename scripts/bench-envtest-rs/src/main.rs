//! Start one envtest environment through the `envtest` crate, time it until the API answers,
//! stop it, print the seconds (scripts/bench runs this once per round). The binaries are the
//! ones in `KUBEBUILDER_ASSETS`; downloading is switched off (it would fetch an index from
//! GitHub).

use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let assets = std::env::var("KUBEBUILDER_ASSETS")?;
    let env = envtest::Environment {
        binary_assets_settings: envtest::BinaryAssetsSettings {
            download_binary_assets: false,
            binary_assets_directory: Some(assets),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = env.create().await?;
    let client = server.client()?;
    client.apiserver_version().await?;
    let ready = started.elapsed().as_secs_f64();
    server.destroy().await?;
    // The same line as the Go envtest baseline prints.
    println!("{{\"ready_s\": {ready:.3}}}");
    Ok(())
}
