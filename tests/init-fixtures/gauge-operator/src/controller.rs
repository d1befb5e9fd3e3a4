use kube::Client;

/// Reconcile Gauges in every namespace until the process stops.
pub async fn run(client: Client) {
    let _ = client;
}

/// Not an entry: two arguments.
pub async fn run_in(client: Client, namespace: String) {
    let _ = (client, namespace);
}
