//! The crate's error type. Every variant says what went wrong and what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Convenient alias for `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while provisioning binaries or running a control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binaries are needed, none were found, and `go` is not on `PATH` to build them.
    #[error(
        "no control-plane binaries for Kubernetes {version}: none in {searched}, and `go` is not on PATH to build them. \
         Install Go >= {min_go} (https://go.dev/dl, or `apt-get install golang`), or set KUBE_HARNESS_ASSETS \
         (or KUBEBUILDER_ASSETS) to a directory holding kube-apiserver, etcd and kubectl"
    )]
    GoMissing {
        /// Kubernetes version asked for.
        version: String,
        /// Where binaries were looked for.
        searched: String,
        /// The Go version that release needs.
        min_go: &'static str,
    },

    /// A Go module's own files (kwok's stage definitions) could not be had.
    #[error("{module}: {problem}; the harness reads them from Go's module cache (`go mod download`, through GOPROXY)")]
    GoModule {
        /// `module@version`.
        module: String,
        /// What went wrong.
        problem: String,
    },

    /// A directory named by an environment variable lacks a binary.
    #[error(
        "{var}={dir:?} does not contain an executable `{binary}`; point {var} at a directory with kube-apiserver, etcd and kubectl (as setup-envtest lays them out), or unset it"
    )]
    AssetsDirIncomplete {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        dir: PathBuf,
        /// The missing binary.
        binary: &'static str,
    },

    /// `go build` (or another build step) failed.
    #[error("{what} failed ({status}); the last lines of its output:\n{tail}\nfull log: {log:?}")]
    Build {
        /// What was being built ("building kube-apiserver v1.37.2 …").
        what: String,
        /// Exit status.
        status: String,
        /// Tail of the build log.
        tail: String,
        /// Full log path.
        log: PathBuf,
    },

    /// A downloaded file's checksum differs from the one its index publishes.
    #[error(
        "{url}: SHA-512 {actual} does not match the index's {expected}; nothing was installed. \
         Check the mirror (KUBE_HARNESS_ENVTEST_INDEX), or set it to `off` to build from Go modules"
    )]
    Checksum {
        /// What was downloaded.
        url: String,
        /// The published checksum.
        expected: String,
        /// The downloaded file's.
        actual: String,
    },

    /// A downloaded archive is unreadable or lacks a binary.
    #[error("envtest tarball: {problem}")]
    Archive {
        /// What is wrong.
        problem: String,
    },

    /// The binaries are of another Kubernetes version than the one asked for.
    #[error(
        "{binary:?} is Kubernetes {found}, but {wanted} was asked for: point KUBE_HARNESS_ASSETS (or \
         KUBEBUILDER_ASSETS) at binaries of {wanted}, or ask for {found} (KUBE_HARNESS_K8S_VERSION={found})"
    )]
    WrongVersion {
        /// The kube-apiserver binary.
        binary: PathBuf,
        /// The version it reported.
        found: String,
        /// The version asked for.
        wanted: String,
    },

    /// The version string is not `MAJOR.MINOR.PATCH`.
    #[error("invalid Kubernetes version {0:?}: expected MAJOR.MINOR.PATCH such as 1.37.2")]
    InvalidVersion(String),

    /// A kube-apiserver flag or feature gate that cannot be parsed (`--apiserver-arg`,
    /// `--feature-gates`, their variables, or the builders).
    #[error("{value:?}: {problem}")]
    BadFlag {
        /// What was given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A feature gate the Kubernetes version does not know (checked before anything starts).
    #[error(
        "feature gate {gate:?} is not known to Kubernetes {version}{}; its components' --help lists: {known}",
        if near.is_empty() { String::new() } else { format!(" (did you mean {near}?)") }
    )]
    UnknownFeatureGate {
        /// The gate asked for.
        gate: String,
        /// The version.
        version: String,
        /// Known gates whose names are close to it.
        near: String,
        /// Every gate the version knows.
        known: String,
    },

    /// An environment variable holds a value the harness cannot use.
    #[error("{var}: {source}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with its value.
        #[source]
        source: Box<Error>,
    },

    /// A Kubernetes version outside the range this release of kube-harness was verified
    /// with (its flags, bootstrap and Go build may differ).
    #[error(
        "Kubernetes {version} is outside the versions this kube-harness is verified with ({range}); pick one of those, or set KUBE_HARNESS_UNVERIFIED_VERSION=1 to try it anyway"
    )]
    UnverifiedVersion {
        /// The version asked for.
        version: String,
        /// The verified range (`1.35.x–1.37.x`).
        range: String,
    },

    /// A filesystem operation failed.
    #[error("{action} {path:?}: {source}")]
    Io {
        /// What was attempted ("create directory", "write", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// Generating a key or certificate failed.
    #[error("certificate generation for {what} failed: {source}")]
    Pki {
        /// Which certificate.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },

    /// A CA another tool made cannot be used to issue certificates.
    #[error("the CA {name:?} cannot issue certificates here: {reason}")]
    ForeignCa {
        /// Its common name.
        name: String,
        /// What does not fit.
        reason: String,
    },

    /// A child process could not be spawned.
    #[error("failed to spawn {binary:?}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A component exited before it became ready.
    #[error("{component} exited before becoming ready ({status}); last lines of {log:?}:\n{tail}")]
    ExitedBeforeReady {
        /// etcd or kube-apiserver.
        component: &'static str,
        /// Its exit status.
        status: String,
        /// The log file.
        log: PathBuf,
        /// Tail of the log.
        tail: String,
    },

    /// The provider cannot do this.
    #[error("{what} is not possible on the {provider} provider: {hint}")]
    Unsupported {
        /// What was asked.
        what: &'static str,
        /// The provider.
        provider: String,
        /// What to do instead.
        hint: &'static str,
    },

    /// A provider could not be used (no Docker, no `kind`, an image that is not present, a
    /// failing `docker`/`kind` command).
    #[error("{0}")]
    Provider(String),

    /// A cluster handle could not be used.
    #[error("cannot attach to the cluster in {file:?}: {problem}")]
    Attach {
        /// The handle file (`KUBE_HARNESS_CLUSTER`).
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A component of a running cluster exited (killed, crashed, out of memory).
    #[error(
        "{component} exited while the cluster was in use ({status}); the cluster is unusable, start a new one. \
         Last lines of {log:?}:\n{tail}"
    )]
    Exited {
        /// etcd or kube-apiserver.
        component: &'static str,
        /// Its exit status.
        status: String,
        /// The log file.
        log: PathBuf,
        /// Tail of the log.
        tail: String,
    },

    /// A component did not become ready in time.
    #[error("{component} not ready after {timeout:?} (last probe: {last_probe}); last lines of {log:?}:\n{tail}")]
    StartupTimeout {
        /// etcd or kube-apiserver.
        component: &'static str,
        /// The timeout that ran out.
        timeout: Duration,
        /// What the last readiness probe saw.
        last_probe: String,
        /// The log file.
        log: PathBuf,
        /// Tail of the log.
        tail: String,
    },

    /// No free loopback port could be found, or ports kept clashing.
    #[error("could not bind a free port on 127.0.0.1 for {component} after {attempts} attempts: {detail}")]
    Ports {
        /// Which component.
        component: &'static str,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        detail: String,
    },

    /// Building a kube client failed.
    #[error("building a Kubernetes client failed: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// A request to the API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// Serialising or parsing JSON failed.
    #[error("JSON error in {what}: {source}")]
    Json {
        /// What was being (de)serialised.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },

    /// The shared cluster of this process failed to start (the first attempt's error).
    #[error("the shared cluster of this test process failed to start: {0}")]
    SharedStart(#[source] std::sync::Arc<Error>),

    /// `KUBE_HARNESS_PROVIDER` or `--provider` names no provider.
    #[error("unknown provider {0:?} (KUBE_HARNESS_PROVIDER or --provider): use local, existing, kind or k3s")]
    UnknownProvider(String),

    /// A kubeconfig could not be read or its current context resolved.
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file (or where it was looked for).
        path: String,
        /// kube's reason.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// The kubeconfig's cluster has no certificate authority.
    #[error(
        "the kubeconfig's cluster {server} has no certificate-authority(-data): kube-harness verifies the API server; \
         add the CA that signed its serving certificate"
    )]
    NoServerCa {
        /// The API server.
        server: String,
    },

    /// A background task panicked or was cancelled.
    #[error("the {what} task failed: {source}")]
    Task {
        /// What the task did.
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },

    /// Watching an object for a condition failed.
    #[error("watching {what} failed: {source}")]
    Watch {
        /// What was watched.
        what: String,
        /// kube-runtime's reason.
        #[source]
        source: kube::runtime::wait::Error,
    },

    /// A fixture could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::target::LoadError),

    /// A fixture could not be applied or its target brought up; the message names the file,
    /// document and object (the remaining cases whose message is all there is).
    #[error("{0}")]
    Fixture(String),

    /// A target failed to come up (what was applied has been rolled back).
    #[error("target {target}: {source}")]
    BringUp {
        /// The target's name.
        target: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },

    /// A wait for a target's object failed while its backend ran; the backend's last log
    /// lines usually say why.
    #[error("{source}; last lines of the backend's log:\n{tail}")]
    WithBackendLog {
        /// The failed wait.
        #[source]
        source: Box<Error>,
        /// The backend log's tail.
        tail: String,
    },

    /// The API server refused a fixture object.
    #[error("{file}: applying {object}: {source}")]
    Apply {
        /// File and document.
        file: String,
        /// `Kind/[namespace/]name`.
        object: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },

    /// A webhook a target declares (CRD conversion, admission) does not answer.
    #[error("{object}: {what} ({endpoint}) does not answer: {problem}")]
    DeadReference {
        /// `Kind/name` of the object that declares it.
        object: String,
        /// "conversion webhook", "webhook validate.example.com".
        what: String,
        /// Where it points.
        endpoint: String,
        /// What was found there.
        problem: String,
    },

    /// The TokenRequest API answered without a token.
    #[error("the TokenRequest for ServiceAccount {service_account} returned no token")]
    NoToken {
        /// `namespace/name`.
        service_account: String,
    },

    /// A backend failed to start, and its log says its identity lacks a permission.
    #[error("{source}\nThe backend's identity lacks a permission; its log says:\n  {line}\n{hint}")]
    BackendForbidden {
        /// The start error (with the log tail).
        #[source]
        source: Box<Error>,
        /// The `… is forbidden: User … cannot …` line.
        line: String,
        /// Which binding usually grants it.
        hint: String,
    },

    /// A backend's readiness check answered but never passed.
    #[error("{source}\n{hint}")]
    BackendReadiness {
        /// The timeout (with the last probe and the log tail).
        #[source]
        source: Box<Error>,
        /// What to set instead.
        hint: String,
    },

    /// An object that was being waited for was deleted.
    #[error("{what} was deleted while waiting")]
    Vanished {
        /// `Kind name`.
        what: String,
    },

    /// A request the harness makes to check something failed.
    #[error("{what}: {source}")]
    Request {
        /// The request (`GET /apis`, say).
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },

    /// The aggregator cannot verify an extension server's serving certificate with the
    /// APIService's `caBundle` (a wrong CA, or a certificate without the Service's DNS name).
    /// Waiting does not heal it, so bring-up stops as soon as the aggregator says so twice.
    #[error(
        "APIService {apiservice}: the aggregator cannot verify its backend's serving certificate ({detail}). \
         Check that its caBundle (a target's `caBundleFrom`) is the CA that issued the backend's serving certificate, \
         and that the certificate's dnsNames include {service_dns}"
    )]
    BackendCertificate {
        /// The APIService.
        apiservice: String,
        /// The aggregator's words, from `tls: failed to verify certificate` on.
        detail: String,
        /// `<service>.<namespace>.svc`, the name the aggregator verifies.
        service_dns: String,
    },

    /// Something that runs in pods (a node, a DaemonSet, a target's Deployment) did not become
    /// ready; `details` holds its pods' states, events and log tails.
    #[error("{object} is not ready after {waited:.1?}:\n{details}")]
    NotReady {
        /// The object, such as `Deployment wardle/wardle-server`.
        object: String,
        /// How long it was waited for.
        waited: Duration,
        /// Pods, containers, events and log tails.
        details: String,
    },

    /// What an assertion over time waited for was not seen before its deadline.
    #[error("not seen within {timeout:?}: {what}; last seen: {last}")]
    NotObserved {
        /// What was expected ("w1 to match the expected fields").
        what: String,
        /// The deadline.
        timeout: Duration,
        /// Why the last state seen did not hold: the first difference and a diff, the
        /// finalizers still there, the events found.
        last: String,
    },

    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    WaitTimeout {
        /// What was waited for.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
