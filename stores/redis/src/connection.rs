//! The connection to Redis: one server through redis-rs's
//! `ConnectionManager` (which reconnects by itself), or a Redis Cluster
//! through its cluster connection (which follows the slots).
//!
//! Both are cheap handles to one multiplexed connection, cloned for each
//! command, so commands from every session share it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, FromRedisValue, RedisResult, ScriptInvocation, TlsCertificates};

use crate::options::{Settings, Target};

/// A connection to the store's server or cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Makes the connection. For one server this returns at once (the
    /// manager connects on first use, and again whenever the connection is
    /// lost); for a cluster it learns the slots from the seed nodes.
    pub(crate) async fn open(settings: &Settings) -> RedisResult<Self> {
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: settings.ca_pem.clone(),
        };
        // A command waits for the connection first: the response timeout
        // covers both, so a heartbeat that connects is not cut short (the
        // store bounds every call with its own timeouts anyway).
        let response_timeout = settings.connect_timeout + settings.command_timeout;
        match &settings.target {
            Target::Single(info) => {
                let mut redis = info.redis_settings().clone();
                if let Some(username) = &settings.username {
                    redis = redis.set_username(username);
                }
                if let Some(password) = &settings.password {
                    redis = redis.set_password(password);
                }
                let info = (**info).clone().set_redis_settings(redis);
                let client = if settings.ca_pem.is_some() {
                    Client::build_with_tls(info, certificates())?
                } else {
                    Client::open(info)?
                };
                // Few quick retries: the heartbeat asks again every second,
                // so the manager's own retries need not outlast one beat.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(std::time::Duration::from_millis(50))
                    .set_max_delay(std::time::Duration::from_millis(500));
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            Target::Cluster(seeds) => {
                let mut builder = ClusterClient::builder(seeds.clone())
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(username) = &settings.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &settings.password {
                    builder = builder.password(password);
                }
                if settings.ca_pem.is_some() {
                    builder = builder.certs(certificates());
                }
                Ok(Self::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }

    /// Runs a script (EVALSHA, loading it when the server does not know it).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &mut self,
        invocation: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Self::Single(connection) => invocation.invoke_async(connection).await,
            Self::Cluster(connection) => invocation.invoke_async(connection).await,
        }
    }
}
