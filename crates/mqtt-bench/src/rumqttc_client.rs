//! The throughput scenario with rumqttc (MQTT 3.1.1), to compare against the
//! raw client and show which one limits a run.

use anyhow::{bail, Result};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::{Duration, Instant};

use crate::ThroughputArgs;

fn options(args: &ThroughputArgs, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, args.target.host.to_string(), args.target.port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(args.window.max(1));
    if let Some(username) = &args.target.username {
        options.set_credentials(username.clone(), "");
    }
    options
}

pub(crate) async fn throughput(
    args: &ThroughputArgs,
    prefix: &str,
    payload: Bytes,
) -> Result<serde_json::Value> {
    let qos = match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        other => bail!("QoS {other} is not supported by the bench (0 or 1)"),
    };
    if args.subscribers > 1 || args.rate > 0 {
        bail!("--client rumqttc runs one subscriber, unpaced");
    }
    let (subscriber, mut sub_events) =
        AsyncClient::new(options(args, &format!("{prefix}-sub")), 64);
    subscriber.subscribe(format!("{prefix}/+"), qos).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await? {
            break;
        }
    }
    let start = Instant::now();
    let expected = args.messages;
    let receiving = tokio::spawn(async move {
        let mut count = 0u64;
        let mut last = Instant::now();
        while count < expected {
            match tokio::time::timeout(Duration::from_secs(3), sub_events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    count += 1;
                    last = Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                Err(_) => break,
            }
        }
        Ok((count, last))
    });
    let per_publisher = args.messages / args.publishers as u64;
    let mut publishing = Vec::new();
    for index in 0..args.publishers {
        let (client, mut events) =
            AsyncClient::new(options(args, &format!("{prefix}-pub{index}")), 1024);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let topic = format!("{prefix}/{index}");
        let payload = payload.clone();
        publishing.push(tokio::spawn(async move {
            for _ in 0..per_publisher {
                client
                    .publish_bytes(&topic, qos, false, payload.clone())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in publishing {
        task.await??;
    }
    let (count, last) = receiving.await??;
    let seconds = last.duration_since(start).as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "throughput",
        "client": "rumqttc",
        "sent": per_publisher * args.publishers as u64,
        "received": count,
        "seconds": seconds,
        "rate": count as f64 / seconds,
    }))
}
