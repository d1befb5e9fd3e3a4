/// Private module: nothing here is reachable from tests.
pub async fn serve(client: kube::Client) {
    let _ = client;
}
