#!/usr/bin/env bash
# ceph-s3.sh - throwaway single-node Ceph (1 mon, 1 OSD, RADOS Gateway) giving a real S3 endpoint
# on 127.0.0.1 for integration tests. No systemd, no cephadm, no containers; everything lives in $CEPH_S3_DIR.
# Locket's copy of the reference in shared/tools/ceph-s3.sh (Debian 12, Ceph 16.2), plus: it installs the
# Debian packages when they are missing (as root), and `rgw-stop` / `rgw-start` stop and start ONLY radosgw,
# so fault tests can take the S3 endpoint away mid-backup without losing the memstore OSD's data.
#
#   ./ceph-s3.sh up         # fresh cluster; writes S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION to $CEPH_S3_DIR/s3.env
#                           # (first runs apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common
#                           #  when a binary is missing; + ceph-mgr if WITH_MGR=1)
#   ./ceph-s3.sh down       # stop daemons by PID (TERM, then KILL), delete the directory (KEEP_DIR=1 keeps it)
#   ./ceph-s3.sh status
#   ./ceph-s3.sh rgw-stop   # stop radosgw only, by PID (RGW_STOP_SIGNAL: TERM, or KILL for a crash)
#   ./ceph-s3.sh rgw-start  # start radosgw again with the same config and wait for HTTP 200
#
# Settings (env): CEPH_S3_DIR (/tmp/ceph-s3), RGW_PORT (7480), MON_V2_PORT (3300), MON_V1_PORT (6789),
#   OBJECTSTORE (memstore | bluestore: sparse file), STORE_BYTES (4 GiB: memstore cap / bluestore file size),
#   WITH_MGR (0), S3_ACCESS_KEY / S3_SECRET_KEY (fixed test keys), UP_TIMEOUT (120 s per wait),
#   STOP_GRACE (10 s between TERM and KILL on `down`).
# Measured here: up in ~2 s (memstore) / ~5 s (bluestore) after a ~15 s package install; ~130-180 MiB RSS idle.
# Known RGW 16 quirks: empty ETag in CompleteMultipartUpload response (use HeadObject); If-Match needs the ETag
# without quotes; If-None-Match:* on PutObject works and is atomic, but is ignored on CompleteMultipartUpload;
# stream bodies need requestChecksumCalculation/responseChecksumValidation = 'WHEN_REQUIRED' in @aws-sdk/client-s3;
# a full memstore makes writes hang (keep STORE_BYTES well above what tests write; RAM ~2.1x stored bytes).
set -euo pipefail

DIR=${CEPH_S3_DIR:-/tmp/ceph-s3}
RGW_PORT=${RGW_PORT:-7480}
MON_V2_PORT=${MON_V2_PORT:-3300}
MON_V1_PORT=${MON_V1_PORT:-6789}
OBJECTSTORE=${OBJECTSTORE:-memstore}
STORE_BYTES=${STORE_BYTES:-4294967296}
WITH_MGR=${WITH_MGR:-0}
ACCESS_KEY=${S3_ACCESS_KEY:-ciaccesskey}
SECRET_KEY=${S3_SECRET_KEY:-cisecretkey123}
UP_TIMEOUT=${UP_TIMEOUT:-120}
CONF=$DIR/ceph.conf
T0=$(date +%s.%N)

log() { printf '[ceph-s3 %6.2fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ceph_() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }
# uuidgen is in uuid-runtime, which a minimal machine may lack; the kernel hands out UUIDs too.
uuid() { if command -v uuidgen >/dev/null; then uuidgen; else cat /proc/sys/kernel/random/uuid; fi; }

# Installs the Debian packages when a binary is missing: a fresh machine (CI) has none of them.
ensure_installed() {
  local b missing=0 pkgs="ceph-mon ceph-osd radosgw ceph-common"
  [ "$WITH_MGR" = 1 ] && pkgs="$pkgs ceph-mgr"
  for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do command -v "$b" >/dev/null || missing=1; done
  [ "$WITH_MGR" = 1 ] && { command -v ceph-mgr >/dev/null || missing=1; }
  [ "$missing" = 1 ] || return 0
  [ "$(id -u)" = 0 ] || die "Ceph is not installed and we are not root: apt-get install -y --no-install-recommends $pkgs"
  log "installing $pkgs (apt-get)"
  # shellcheck disable=SC2086 # $pkgs is a list of words on purpose
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >"${TMPDIR:-/tmp}/ceph-s3-apt.log" 2>&1; then
    # Usually missing or stale package lists (a fresh container): refresh once and try again.
    log "apt-get install failed; running apt-get update first"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"${TMPDIR:-/tmp}/ceph-s3-apt.log" 2>&1 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >>"${TMPDIR:-/tmp}/ceph-s3-apt.log" 2>&1 \
      || die "apt-get install $pkgs failed (see ${TMPDIR:-/tmp}/ceph-s3-apt.log)"
  fi
  log "installed $pkgs"
}

wait_for() {
  local what=$1; shift; local deadline=$(( $(date +%s) + UP_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what (logs: $DIR/logs)"
    sleep 0.2
  done
  log "$what: ok"
}

start() {
  local name=$1; shift
  nohup "$@" -f >"$DIR/logs/$name.out" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
  log "started $name (pid $!)"
}

running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
alive() { [ -f "$DIR/pids/$1" ] && running "$(cat "$DIR/pids/$1")"; }

stop_one() {
  local name=$1 pid i
  [ -f "$DIR/pids/$name" ] || return 0
  pid=$(cat "$DIR/pids/$name")
  if running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $(( ${STOP_GRACE:-10} * 10 ))); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then log "$name (pid $pid) still running ${STOP_GRACE:-10} s after TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    for i in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    # The daemon's parent (this script's earlier run) is gone, so init reaps it; give init a
    # moment, so that `pgrep` right after `down` shows no leftover zombie.
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped $name (pid $pid)"
  fi
  rm -f "$DIR/pids/$name"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
osd_up() { ceph_ osd stat -f json | grep -q '"num_up_osds":1'; }
rgw_up() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$RGW_PORT" || return 1
  printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [[ $line == "HTTP/1."?" 200"* ]]
}

cmd_down() {
  for n in rgw osd.0 mgr.x mon.a; do stop_one "$n"; done
  if [ "${KEEP_DIR:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; log "removed $DIR"; fi
}

cmd_status() {
  for n in mon.a mgr.x osd.0 rgw; do
    if alive "$n"; then echo "$n pid $(cat "$DIR/pids/$n") rss_kib $(ps -o rss= -p "$(cat "$DIR/pids/$n")")"; fi
  done
  [ -f "$CONF" ] && ceph_ -s || true
}

cmd_up() {
  trap 'rc=$?; if [ $rc != 0 ]; then log "up failed (rc $rc), stopping daemons; logs kept in $DIR/logs"; KEEP_DIR=1 cmd_down; fi' EXIT
  ensure_installed
  for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do command -v "$b" >/dev/null || die "$b not installed"; done
  [ "$WITH_MGR" = 1 ] && { command -v ceph-mgr >/dev/null || die "ceph-mgr not installed"; }
  if [ -d "$DIR" ]; then log "old cluster dir found, tearing it down"; cmd_down; fi
  for p in "$RGW_PORT" "$MON_V2_PORT" "$MON_V1_PORT"; do port_free "$p" || die "port $p on 127.0.0.1 is in use"; done
  mkdir -p "$DIR"/{mon/a,mgr/x,osd/0,rgw,logs,pids,run}

  local fsid osd_uuid mon_addr
  fsid=$(uuid)
  mon_addr="[v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_V1_PORT]"
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = $mon_addr
public network = 127.0.0.0/8
ms bind ipv6 = false
# no cephx: radosgw defaults to a "secure" mon connection, which needs cephx, hence crc mode below
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/logs/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
osd op num shards = 2
osd op num threads per shard = 2

[mon.a]
mon data = $DIR/mon/a
# commit map changes every 50 ms instead of every 1 s: rgw's pool creation goes from ~10 s to ~1 s
paxos propose interval = 0.05
paxos min wait = 0.01

[mgr.x]
mgr data = $DIR/mgr/x

[osd.0]
osd data = $DIR/osd/0
osd objectstore = $OBJECTSTORE
memstore device bytes = $STORE_BYTES
bluestore block create = true
bluestore block size = $STORE_BYTES
bluestore block db create = false
bluestore block wal create = false
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 268435456

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
rgw thread pool size = 64
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF

  monmaptool --create --fsid "$fsid" --addv a "$mon_addr" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" >"$DIR/logs/mkfs.mon.out" 2>&1 || die "ceph-mon --mkfs failed"
  start mon.a ceph-mon -c "$CONF" -i a
  wait_for "mon quorum" ceph_ mon stat

  if [ "$WITH_MGR" = 1 ]; then start mgr.x ceph-mgr -c "$CONF" -i x; fi

  osd_uuid=$(uuid)
  [ "$(ceph_ osd new "$osd_uuid")" = 0 ] || die "ceph osd new did not return id 0"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/logs/mkfs.osd.out" 2>&1 || die "ceph-osd --mkfs failed"
  start osd.0 ceph-osd -c "$CONF" -i 0
  local pools=".rgw.root default.rgw.log default.rgw.control default.rgw.meta default.rgw.buckets.index
               default.rgw.buckets.data default.rgw.buckets.non-ec" pool
  for pool in $pools; do printf 'osd pool create %s 8 8\nosd pool application enable %s rgw\n' "$pool" "$pool"; done \
    | ceph_ >"$DIR/logs/pools.out" 2>&1 || true
  local have; have=$(ceph_ osd pool ls)
  for pool in $pools; do grep -qx -- "$pool" <<<"$have" || die "pool $pool missing (see logs/pools.out)"; done
  log "rgw pools created"
  wait_for "osd.0 up" osd_up

  start rgw radosgw -c "$CONF" -n client.rgw.a
  wait_for "rgw http 200 on 127.0.0.1:$RGW_PORT" rgw_up

  radosgw-admin -c "$CONF" -n client.admin user create --uid=ci --display-name="CI user" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/logs/user-create.out" 2>&1 \
    || die "radosgw-admin user create failed: $(tail -3 "$DIR/logs/user-create.out")"
  cat >"$DIR/s3.env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
S3_ACCESS_KEY=$ACCESS_KEY
S3_SECRET_KEY=$SECRET_KEY
S3_REGION=us-east-1
EOF
  log "S3 ready: $(tr '\n' ' ' <"$DIR/s3.env")"
  cat "$DIR/s3.env"
  trap - EXIT
}

# Stops radosgw alone. TERM by default (STOP_GRACE then KILL, as `down`); RGW_STOP_SIGNAL=KILL simulates a crash.
cmd_rgw_stop() {
  [ -f "$DIR/pids/rgw" ] || die "no radosgw pid file in $DIR/pids (is the cluster up?)"
  if [ "${RGW_STOP_SIGNAL:-TERM}" = KILL ]; then
    local pid i; pid=$(cat "$DIR/pids/rgw")
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    running "$pid" && die "radosgw (pid $pid) survived KILL"
    rm -f "$DIR/pids/rgw"
    log "killed rgw (pid $pid)"
  else
    stop_one rgw
  fi
}

# Starts radosgw again with the cluster's config; mon and OSD (and so the data) are untouched.
cmd_rgw_start() {
  [ -f "$CONF" ] || die "no cluster in $DIR (run up first)"
  alive mon.a && alive osd.0 || die "mon.a or osd.0 is not running in $DIR"
  if alive rgw; then log "rgw already running (pid $(cat "$DIR/pids/rgw"))"; return 0; fi
  port_free "$RGW_PORT" || die "port $RGW_PORT on 127.0.0.1 is in use"
  # A radosgw that never answers is stopped again, so a failed start leaves nothing behind.
  trap 'rc=$?; if [ $rc != 0 ]; then log "rgw-start failed (rc $rc), stopping rgw"; stop_one rgw; fi' EXIT
  start rgw radosgw -c "$CONF" -n client.rgw.a
  wait_for "rgw http 200 on 127.0.0.1:$RGW_PORT" rgw_up
  trap - EXIT
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  rgw-stop) cmd_rgw_stop ;;
  rgw-start) cmd_rgw_start ;;
  *) echo "usage: $0 up|down|status|rgw-stop|rgw-start" >&2; exit 2 ;;
esac
