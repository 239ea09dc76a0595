//! Connections to one instance: a tiberius client per pooled connection (deadpool),
//! made with the instance's TLS, login and timeouts, `ApplicationName=sqlvigil` and
//! `ApplicationIntent=ReadOnly`.

use crate::config::{Auth, Encryption, InstanceConfig, MonitorConfig, Secret};
use crate::error::{MonitorError, Result};
use deadpool::managed::{self, Metrics, RecycleResult};
use std::time::Duration;
use tiberius::{AuthMethod, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub(crate) type Client = tiberius::Client<Compat<TcpStream>>;
pub(crate) type Pool = managed::Pool<Manager>;
pub(crate) type Conn = managed::Object<Manager>;

/// Makes logged-in clients for one instance.
pub(crate) struct Manager {
    instance: String,
    addr: (String, u16),
    config: tiberius::Config,
    connect_timeout: Duration,
}

/// The login's credential, resolved from its reference at start.
pub(crate) enum Credential {
    Login { user: String, password: Secret },
    Token(Secret),
}

impl Credential {
    pub(crate) fn resolve(inst: &InstanceConfig, at: &str) -> Result<Credential> {
        Ok(match &inst.auth {
            Auth::SqlLogin { user, password } => Credential::Login {
                user: user.clone(),
                password: password.resolve(&format!("{at}.auth.password"))?,
            },
            Auth::AadToken { token } => {
                Credential::Token(token.resolve(&format!("{at}.auth.token"))?)
            }
        })
    }
}

impl Manager {
    pub(crate) fn new(inst: &InstanceConfig, cred: &Credential, cfg: &MonitorConfig) -> Manager {
        let mut config = tiberius::Config::new();
        config.host(&inst.host);
        config.port(inst.port);
        config.database(inst.database.as_deref().unwrap_or("master"));
        config.application_name("sqlvigil");
        config.readonly(true);
        config.encryption(match inst.encryption {
            Encryption::Required => EncryptionLevel::Required,
            Encryption::LoginOnly => EncryptionLevel::Off,
            Encryption::Off => EncryptionLevel::NotSupported,
        });
        if inst.trust_server_certificate {
            tracing::warn!(
                instance = %inst.name,
                "monitor: trust_server_certificate is on: the server's certificate is not validated"
            );
            config.trust_cert();
        } else if let Some(ca) = &inst.ca_file {
            config.trust_cert_ca(ca.display());
        }
        config.authentication(match cred {
            Credential::Login { user, password } => AuthMethod::sql_server(user, password.expose()),
            Credential::Token(t) => AuthMethod::aad_token(t.expose()),
        });
        Manager {
            instance: inst.name.clone(),
            addr: (inst.host.clone(), inst.port),
            config,
            connect_timeout: cfg.connect_timeout,
        }
    }

    async fn connect(&self) -> Result<Client> {
        let connect_error = |message: String| MonitorError::Connect {
            instance: self.instance.clone(),
            message,
        };
        let tcp = TcpStream::connect((self.addr.0.as_str(), self.addr.1))
            .await
            .map_err(|e| connect_error(format!("{}:{}: {e}", self.addr.0, self.addr.1)))?;
        // Each collector answer is a few packets; Nagle would hold the last one back.
        let _ = tcp.set_nodelay(true);
        tiberius::Client::connect(self.config.clone(), tcp.compat_write())
            .await
            .map_err(|e| match MonitorError::from(e) {
                server @ MonitorError::Server { .. } => server,
                other => connect_error(other.to_string()),
            })
    }
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = MonitorError;

    async fn create(&self) -> Result<Client> {
        tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| MonitorError::Timeout {
                what: format!("connecting to `{}`", self.instance),
                after: self.connect_timeout,
            })?
    }

    /// A connection that failed is taken out of the pool where it failed
    /// (`Object::take`), so the ones handed back are usable.
    async fn recycle(&self, _: &mut Client, _: &Metrics) -> RecycleResult<MonitorError> {
        Ok(())
    }
}

/// The pool of one instance.
pub(crate) fn pool(manager: Manager, size: usize) -> Result<Pool> {
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| MonitorError::Config(format!("monitor pool: {e}")))
}

/// A connection from the pool; the connect error (or the wait for a free one, bounded
/// by the connect timeout) as it is.
pub(crate) async fn get(pool: &Pool, wait: Duration) -> Result<Conn> {
    match tokio::time::timeout(wait * 2, pool.get()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(managed::PoolError::Backend(e))) => Err(e),
        Ok(Err(e)) => Err(MonitorError::Protocol(format!("connection pool: {e}"))),
        Err(_) => Err(MonitorError::Timeout {
            what: "waiting for a pooled connection".into(),
            after: wait * 2,
        }),
    }
}
