#!/bin/bash
# Benchmark of issue 15: one year of a busy CertCentral account (1,000,000 rows) through the
# Report Library: time, requests and peak RSS of `collect` (release build: cargo build --release).
# Needs sqlite3, curl, python3 and GNU time.
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/auditwarden"
DIR=$(mktemp -d); cd "$DIR"; cat > b.toml <<TOML
[store]
path = "aw.db"
[[accounts]]
name = "cc"
kind = "certcentral"
base_url = "http://127.0.0.1:18095"
api_key_env = "K"
backfill_days = 365
TOML
rm -f aw.db aw.db-wal aw.db-shm
$B simulate --listen 127.0.0.1:18095 --events 1000000 --days 365 --users 1000 > sim.out 2>&1 &
SIM=$!
for i in $(seq 1 600); do grep -q listening sim.out && break; sleep 0.5; done
uptime
K=simulator-key AUDITWARDEN_LOG=warn /usr/bin/time -v $B --config b.toml collect > collect.out 2> collect.err
echo "exit $?"
grep -E "Elapsed|Maximum resident|User time|System time" collect.err
cat collect.out | head -5
sqlite3 aw.db "select count(*) from events; select state, count(*) from report_runs group by 1; select count(*) from coverage where complete=1;"
curl -s http://127.0.0.1:18095/_sim/stats | python3 -c "import json,sys; s=json.load(sys.stdin); print({k:v for k,v in s['routes'].items() if 'reports' in k}, s['requests'])"
grep VmHWM /proc/$SIM/status
kill $SIM
