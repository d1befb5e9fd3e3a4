#[tokio::main]
async fn main() {
    gauge_operator::controller::run(kube::Client::try_default().await.expect("client")).await;
}
