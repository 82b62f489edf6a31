//! The raw broker ceiling for `scripts/bench-broker.sh`: the very messages the pipeline
//! would publish for a folder of files (same count, same bytes), published with
//! confirms, `mandatory` and the same in-flight window, and consumed with acks by the
//! same number of consumers and prefetch — with no parsing on the clock and no store.
//!
//! `cargo bench --bench broker_ceiling -- AMQP_URL INBOX RECORDS_PER_MESSAGE [CONSUMERS] [PREFETCH] [WINDOW]`
//! prints `messages records bytes seconds`.

use esr_ingest::adapters::rabbitmq::message;
use esr_ingest::core::name::{NameProfile, NameVerdict};
use esr_ingest::core::parse::{FileParser, Line};
use esr_ingest::core::schema::Layout;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

fn messages(inbox: &str, per_message: usize) -> (Vec<Vec<u8>>, u64) {
    let layout = Arc::new(Layout::default_esr());
    let profile = NameProfile::default();
    let mut names: Vec<_> = std::fs::read_dir(inbox).expect("inbox").map(|e| e.expect("entry").path()).collect();
    names.sort();
    let (mut out, mut records) = (Vec::new(), 0u64);
    for path in names {
        let NameVerdict::Batch(file) = profile.classify(path.file_name().and_then(|n| n.to_str()).unwrap_or("")) else {
            continue;
        };
        let mut parser = FileParser::new(std::fs::File::open(&path).expect("open"), &file, layout.clone());
        let mut batch = Vec::new();
        while let Some(line) = parser.next_line().expect("parse") {
            if let Line::Record(r) = line {
                batch.push(r);
                if batch.len() == per_message {
                    out.push(message::encode(&std::mem::take(&mut batch), 1).expect("encode"));
                }
                records += 1;
            }
        }
        if !batch.is_empty() {
            out.push(message::encode(&batch, 1).expect("encode"));
        }
    }
    (out, records)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.len() < 3 {
        eprintln!("usage: broker_ceiling AMQP_URL INBOX RECORDS_PER_MESSAGE [CONSUMERS] [PREFETCH] [WINDOW]");
        std::process::exit(2);
    }
    let arg = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (url, inbox, per_message) = (&args[0], &args[1], arg(2, 100));
    let (consumers, prefetch, window) = (arg(3, 2), arg(4, 16) as u16, arg(5, 256));
    let (bodies, records) = messages(inbox, per_message);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let queue = format!("esr-ingest.ceiling.{}", std::process::id());
    let conn = Connection::connect(url, ConnectionProperties::default()).await.expect("connect");
    let setup = conn.create_channel().await.expect("channel");
    let mut args_q = FieldTable::default();
    args_q.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    setup.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args_q).await.expect("declare");

    let total = bodies.len();
    let start = Instant::now();
    let mut consuming = Vec::new();
    let consumer_conn = Arc::new(Connection::connect(url, ConnectionProperties::default()).await.expect("connect"));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1024);
    for _ in 0..consumers {
        let (conn, queue, done) = (consumer_conn.clone(), queue.clone(), done_tx.clone());
        consuming.push(tokio::spawn(async move {
            let ch = conn.create_channel().await.expect("channel");
            ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
            let mut c = ch
                .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .expect("consume");
            while let Some(Ok(d)) = c.next().await {
                d.ack(BasicAckOptions::default()).await.expect("ack");
                if done.send(()).await.is_err() {
                    break;
                }
            }
        }));
    }
    let publisher = conn.create_channel().await.expect("channel");
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let mut in_flight = VecDeque::new();
    for (i, body) in bodies.iter().enumerate() {
        if in_flight.len() >= window {
            let c: lapin::PublisherConfirm = in_flight.pop_front().expect("window");
            assert!(c.await.expect("confirm").is_ack());
        }
        let props = BasicProperties::default().with_message_id(format!("m{i}").as_str().into()).with_delivery_mode(2);
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                props,
            )
            .await
            .expect("publish");
        in_flight.push_back(confirm);
    }
    for c in in_flight {
        assert!(c.await.expect("confirm").is_ack());
    }
    for _ in 0..total {
        done_rx.recv().await.expect("consumed");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(done_rx);
    let _ = setup.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    println!("{total} {records} {bytes} {secs:.3}");
    std::process::exit(0);
}
