"""Latency from a file landing in S3 to its records applied, with S3 event notifications
and with polling. Run by scripts/bench.d/latency.sh (section "latency"), which starts the
S3-compatible server and RabbitMQ and exports their addresses and credentials.

The service runs `run` over `s3://BUCKET/in/` into a SQLite store. One file at a time
(SEV, SEQ 1, 2, ...) is uploaded after a random pause (up to a second with events, up to
the 10 s poll interval when polling, so uploads fall anywhere in the cycle); its latency is
from the upload's reply to `/status` first counting it applied (polled every 5 ms). With
events, the notification MinIO would send is published to the events exchange right
after the upload. Prints one JSON object: the mode, the count, p50, p99 and max in
seconds.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import time
import urllib.request

import boto3
import botocore.config
import pika


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def file_text(seq, records):
    date = time.strftime("%Y%m%d", time.gmtime(1659139200 + 86400 * seq))  # 2022-07-30 + seq days
    lines = [f"HDR,RMC,SEV,{date},{seq:08}"]
    for i in range(records):
        lines.append(f"POR,{seq * records + i},,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc")
    lines.append(f"TRL,{records}")
    return f"DE_SEV_RMC_{date}_{seq:08}.DAT", ("\n".join(lines) + "\n").encode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--mode", choices=["events", "polling"], required=True)
    p.add_argument("--files", type=int, default=30)
    p.add_argument("--records", type=int, default=100)
    a = p.parse_args()
    endpoint, amqp = os.environ["ESR_TEST_S3_ENDPOINT"], os.environ["ESR_TEST_AMQP_URL"]
    os.makedirs(a.work, exist_ok=True)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    bucket = f"latency-{a.mode}-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    exchange = f"latency-{a.mode}-{os.getpid()}.events"
    channel = None
    config = (
        f'reconcile_interval = "1h"\n[s3]\nendpoint = "{endpoint}"\nregion = "us-east-1"\nforce_path_style = true\n'
    )
    if a.mode == "events":
        connection = pika.BlockingConnection(pika.URLParameters(amqp))
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="fanout", durable=True)
        config += f'events_queue = "{exchange}.q"\nevents_exchange = "{exchange}"\nevents_url = "{amqp}"\n'
    else:
        config = 'poll_interval = "10s"\n' + config.replace('reconcile_interval = "1h"\n', "")
    cfg = os.path.join(a.work, "esr.toml")
    with open(cfg, "w") as f:
        f.write(config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(a.work, "run.log"), "w")
    proc = subprocess.Popen(
        [a.bin, "--config", cfg, "--source", f"s3://{bucket}/in/", "--store", os.path.join(a.work, "s.db"),
         "run", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=dict(os.environ, ESR_INGEST_LOG="info"),  # the events listener says when it listens
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if "esr_ingest_passes_total" in get(f"{url}/metrics"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the service finished no pass in a minute")
            time.sleep(0.1)
        if channel is not None:
            while "listening for S3 event notifications" not in open(log.name).read():
                if time.monotonic() > deadline:
                    raise SystemExit("the service never listened for events")
                time.sleep(0.1)

        def applied():
            return json.loads(get(f"{url}/status"))["counts"]["applied_files"]

        latencies = []
        rng = random.Random(7)
        for seq in range(1, a.files + 1):
            time.sleep(rng.uniform(0, 1 if channel is not None else 10))
            name, body = file_text(seq, a.records)
            s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=body)
            landed = time.monotonic()
            if channel is not None:
                event = {
                    "EventName": "s3:ObjectCreated:Put",
                    "Key": f"{bucket}/in/{name}",
                    "Records": [{
                        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
                        "s3": {"bucket": {"name": bucket}, "object": {"key": f"in%2F{name}", "size": len(body)}},
                    }],
                }
                channel.basic_publish(exchange=exchange, routing_key="", body=json.dumps(event))
            while applied() < seq:
                if time.monotonic() - landed > 120:
                    raise SystemExit(f"{name} not applied in two minutes")
                time.sleep(0.005)
            latencies.append(time.monotonic() - landed)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    print(json.dumps({
        "mode": a.mode, "files": len(latencies), "p50": statistics.median(latencies), "p99": p99,
        "max": latencies[-1],
    }))


if __name__ == "__main__":
    main()
