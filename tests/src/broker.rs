//! The broker a pipeline test runs against, chosen by `TESSERA_TEST_BROKER`:
//! - `mock` (the default): librdkafka's mock cluster, inside the test process. It speaks the
//!   Kafka protocol and takes fault injection, but keeps 5 MiB per partition and coordinates
//!   groups slowly.
//! - `tansu`: tansu 0.6.0, an Apache-Kafka-compatible broker, started as a child process on
//!   loopback with in-memory storage (`scripts/install-tansu.sh`, run by `make test`, puts it in
//!   `.tessera/tansu/bin/tansu`; `$TESSERA_TANSU` names another binary).
//!
//! Where tansu is not faithful (the conformance suite, `tests/tests/broker_conformance.rs`,
//! pins each gap) [`TestBroker::producer_properties`] gives the settings that avoid it.
//!
//! This file is also compiled into the `tessera` package's integration tests
//! (`#[path = ...] mod broker;`), so it names only crates both packages depend on.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tessera::embedded::EmbeddedKafka;

/// Environment variable choosing the broker: `mock` (default) or `tansu`.
pub const BROKER_ENV: &str = "TESSERA_TEST_BROKER";
/// Environment variable naming the tansu binary (default `.tessera/tansu/bin/tansu`).
pub const TANSU_ENV: &str = "TESSERA_TANSU";

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// librdkafka's mock cluster, in process.
    Mock,
    /// tansu 0.6.0, a child process.
    Tansu,
}

impl BrokerKind {
    /// The broker `TESSERA_TEST_BROKER` asks for; panics on a value it does not know, so a
    /// typo cannot quietly run the tests against the other broker.
    pub fn from_env() -> Self {
        match std::env::var(BROKER_ENV).as_deref() {
            Err(_) | Ok("") | Ok("mock") => Self::Mock,
            Ok("tansu") => Self::Tansu,
            Ok(other) => panic!("{BROKER_ENV}={other:?}: expected `mock` or `tansu`"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mock => "mock",
            Self::Tansu => "tansu",
        }
    }
}

/// A running broker of either kind.
pub enum TestBroker {
    Mock(EmbeddedKafka),
    Tansu(Tansu),
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} broker at {}",
            self.kind().name(),
            self.bootstrap_servers()
        )
    }
}

impl TestBroker {
    /// Starts the broker `TESSERA_TEST_BROKER` asks for (one broker).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::start(BrokerKind::from_env())
    }

    /// Starts a broker of `kind`.
    pub fn start(kind: BrokerKind) -> anyhow::Result<Self> {
        Ok(match kind {
            BrokerKind::Mock => Self::Mock(EmbeddedKafka::start(1)?),
            BrokerKind::Tansu => Self::Tansu(Tansu::start()?),
        })
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Mock(_) => BrokerKind::Mock,
            Self::Tansu(_) => BrokerKind::Tansu,
        }
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Mock(kafka) => kafka.bootstrap_servers(),
            Self::Tansu(tansu) => tansu.bootstrap_servers(),
        }
    }

    /// Creates a topic: through the mock cluster's own API, or Kafka's CreateTopics on tansu
    /// (which creates no topic on first use).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            Self::Mock(kafka) => kafka.create_topic(name, partitions),
            Self::Tansu(tansu) => tansu.create_topic(name, partitions),
        }
    }

    /// The mock cluster, for fault injection; `None` on tansu.
    pub fn mock(&self) -> Option<&EmbeddedKafka> {
        match self {
            Self::Mock(kafka) => Some(kafka),
            Self::Tansu(_) => None,
        }
    }

    /// Producer settings the pipeline needs on this broker: on tansu one record per batch,
    /// since tansu 0.6.0 misplaces fetches inside multi-record batches and reports a short
    /// high watermark (broker_conformance pins both).
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        match self {
            Self::Mock(_) => Vec::new(),
            Self::Tansu(_) => vec![("batch.num.messages".into(), "1".into())],
        }
    }
}

/// tansu on a free loopback port with in-memory storage; killed when dropped. Its log is kept
/// in a temporary folder and printed if it fails to start.
pub struct Tansu {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Tansu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tansu at {} (pid {})",
            self.bootstrap_servers(),
            self.child.id()
        )
    }
}

impl Tansu {
    /// The tansu binary: `$TESSERA_TANSU`, else `.tessera/tansu/bin/tansu` in the workspace.
    pub fn binary() -> PathBuf {
        std::env::var_os(TANSU_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tessera/tansu/bin/tansu")
            })
    }

    /// Starts tansu and waits until it answers a metadata request.
    pub fn start() -> anyhow::Result<Self> {
        let binary = Self::binary();
        anyhow::ensure!(
            binary.is_file(),
            "tansu not found at {}: run `make tansu` (scripts/install-tansu.sh) or set {TANSU_ENV}",
            binary.display()
        );
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("tansu.log");
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        let tansu = Self {
            child,
            port,
            _dir: dir,
        };
        if let Err(e) = tansu.wait_ready(Duration::from_secs(30)) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!("tansu did not start: {e}\n--- tansu log ---\n{log}");
        }
        Ok(tansu)
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "port {} never opened", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()?;
        loop {
            match client.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => anyhow::ensure!(Instant::now() < deadline, "no broker in metadata"),
                Err(e) => anyhow::ensure!(Instant::now() < deadline, "metadata: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a topic with Kafka's CreateTopics request and waits until metadata shows it.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        // A broker starting beside many others on a loaded machine may not answer the first
        // request in time: ask again (a topic the lost request did create is fine). The admin
        // client's own thread completes the request, so blocking here is safe inside a test's
        // runtime.
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(20)));
        let mut attempt = 1;
        loop {
            let outcome = block_on(admin.create_topics([&topic], &options)).and_then(|results| {
                results.into_iter().try_for_each(|result| match result {
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt > 1 => Ok(()),
                    Err((_, code)) => Err(KafkaError::AdminOp(code)),
                    Ok(_) => Ok(()),
                })
            });
            match outcome {
                Ok(()) => break,
                Err(error) if attempt < 3 => {
                    eprintln!("creating topic {name} (attempt {attempt}): {error}; again");
                    attempt += 1;
                }
                Err(error) => anyhow::bail!("creating topic {name}: {error}"),
            }
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metadata = client.fetch_metadata(Some(name), Duration::from_secs(5))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .map_or(0, |t| t.partitions().len());
            if found == usize::try_from(partitions)? {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "topic {name}: {found} of {partitions} partitions in metadata"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the kernel just handed out on loopback (a short race with other processes, which a
/// failed start reports).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Runs `future` to completion on this thread: for rdkafka futures, which their client's
/// background thread completes.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
