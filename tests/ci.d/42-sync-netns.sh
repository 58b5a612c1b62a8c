#!/usr/bin/env bash
# Clock sync and transport start alignment over a real network (issue 4,
# item 7): three `toaster peer` processes in three network namespaces joined
# by veth pairs to a bridge (in a fourth namespace), the same set-up as
# 30-netns-live.sh.
#
#   * 2% random loss of every UDP datagram in the kernel (nftables numgen on
#     each peer's input; this kernel has no netem);
#   * 5 ms ± 2 ms delay/jitter from toaster's seeded userspace stage on every
#     received datagram (so each direction of a ping/pong gets it);
#   * each peer has an injected clock: local = CLOCK_MONOTONIC × (1 + D·1e-6) + O
#     with (O, D) = (0, 0), (+3 ms, +40 ppm), (−2 ms, −25 ppm).
#
# Every peer prints once a second {"local_ns", "session_ns", "master", …}.
# All namespaces share one kernel CLOCK_MONOTONIC and the injected clocks are
# known, so the checker recovers each line's true monotonic instant from
# local_ns, evaluates the master's session clock at that instant (a line fitted
# through the master's own lines) and compares it with the follower's
# session_ns. Asserted after a 10 s warm-up (session forms at ~2 s) and up to
# the first peer's last line (a line printed after another peer has stopped
# and said goodbye would see a new election):
#   * all three agree on one master and every follower is synced;
#   * offset error p99 (one line a second gives ~18 samples per follower, so
#     this p99 is the max): every follower ≤ 250 µs (the issue's per-peer
#     netns target; with kernel receive timestamps and the session-formation
#     rule, 36 followers in a row stayed ≤ 220 µs: docs/sync.md), and the
#     median over followers too;
#   * control: the followers' raw local clocks fail the same measurement;
#   * the kernel really dropped datagrams and the stage really delayed them.
#
# Transport start alignment (same run): clk-1 issues a transport command
# every 2 s once synced (`--transport-every-s 2`: PLAY/STOP alternating, each
# stamped 50 ms ahead in session time and sent 3 times). Every peer, the
# issuer included, applies each command when its session clock reaches the
# command's timestamp and prints {"transport", "seq", "session_target_ns",
# "local_target_ns", "local_applied_ns", "late", …}; local_target_ns is its
# arbiter's mapping of the timestamp onto its own (injected) clock, i.e. the
# instant a DAW would land on. The checker inverts each peer's injected clock
# to get the true CLOCK_MONOTONIC instant of local_target_ns. Asserted: at
# least 5 commands land after the warm-up (8 do), and for each of them:
#   * every peer applied it exactly once, none of them late;
#   * every peer's true instant is within ±0.5 ms (TRANSPORT_TOL_US, the
#     issue's target) of the master's (the session timeline's owner) — so the
#     spread max − min is ≤ 1 ms; the spread and the errors against the
#     master and against the median are printed (median and max, µs);
#   * control: had each follower acted when its raw local clock read the
#     timestamp (no mapping), it would miss ±0.5 ms.
# Commands landing in the last second (a peer may already have stopped)
# are left out.
# Reported, not asserted: wake-up lateness (local_applied_ns −
# local_target_ns), the drift of each follower's error (ppm).
# Namespaces are created here and removed by the trap, pass or fail
# (SYNC_NETNS_KEEP=1 keeps the peers' JSON lines for a post-mortem).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "42-sync-netns: needs root (ip netns, nft); CI runs as root" >&2
  exit 1
fi
for tool in ip nft python3; do
  command -v "$tool" >/dev/null || { echo "42-sync-netns: missing $tool (tests/deps/apt-livenet.txt)" >&2; exit 1; }
done

SECONDS_RUN=${SYNC_NETNS_SECONDS:-28}
WARMUP_S=${SYNC_NETNS_WARMUP_S:-10}
# The issue's target, per peer: every follower's p99 must stay under the
# guard (the median check is kept; see docs/sync.md).
P99_LIMIT_US=${SYNC_NETNS_P99_US:-250}
P99_GUARD_US=${SYNC_NETNS_P99_GUARD_US:-250}
# Transport start alignment: every peer within this of the master, µs.
TRANSPORT_TOL_US=${SYNC_NETNS_TRANSPORT_US:-500}
TRANSPORT_EVERY_S=2

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
TAG="js$$"
SW="${TAG}sw"
NS=("${TAG}a" "${TAG}b" "${TAG}c")
IPS=(10.78.0.1 10.78.0.2 10.78.0.3)
OFFSETS=(0 3000000 -2000000)
DRIFTS=(0 40 -25)
OUT=$(mktemp -d)

cargo build -q -p toaster
# A private copy: a shared target dir may be rebuilt by someone else meanwhile.
cp "$CARGO_TARGET_DIR/debug/toaster" "$OUT/toaster"
TOASTER="$OUT/toaster"

cleanup() {
  for n in "${NS[@]}" "$SW"; do ip netns del "$n" 2>/dev/null || true; done
  # SYNC_NETNS_KEEP=1 keeps every peer's JSON lines for a post-mortem.
  if [ "${SYNC_NETNS_KEEP:-0}" = 1 ]; then echo "42-sync-netns: peer output kept in $OUT"; else rm -rf "$OUT"; fi
}
trap cleanup EXIT

ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
# Flood multicast to every port (no IGMP snooping querier in this tiny LAN).
ip -n "$SW" link set br0 type bridge mcast_snooping 0
ip -n "$SW" link set br0 up
for i in 0 1 2; do
  n=${NS[$i]}
  ip netns add "$n"
  ip link add "${TAG}v$i" type veth peer name "${TAG}p$i"
  ip link set "${TAG}v$i" netns "$n"
  ip link set "${TAG}p$i" netns "$SW"
  ip -n "$SW" link set "${TAG}p$i" master br0 up
  ip -n "$n" link set lo up
  ip -n "$n" link set "${TAG}v$i" name eth0
  ip -n "$n" addr add "${IPS[$i]}/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" route add 224.0.0.0/4 dev eth0
  # 2% random loss of every UDP datagram arriving in this namespace.
  ip netns exec "$n" nft -f - <<'EOF'
table inet jamnet_loss {
  counter lost {}
  chain input {
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < 2 counter name "lost" drop
  }
}
EOF
done

SESSION=3d0c7a1e-9b2f-4c55-8e61-5a7f2b9c0d42
# All three start together (the hard case: nobody answers during the join grace).
pids=()
for i in 0 1 2; do
  issue=()
  [ "$i" = 1 ] && issue=(--transport-every-s "$TRANSPORT_EVERY_S")
  ip netns exec "${NS[$i]}" "$TOASTER" peer --session "$SESSION" --iface "${IPS[$i]}" \
    --name "clk-$i" --seconds "$SECONDS_RUN" --json \
    --impair-delay-ms 5 --impair-jitter-ms 2 --impair-seed $((21 + i)) \
    --clock-offset-ns "${OFFSETS[$i]}" --clock-drift-ppm "${DRIFTS[$i]}" "${issue[@]}" \
    >"$OUT/$i.json" 2>"$OUT/$i.err" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [ $rc != 0 ]; then
  echo "a peer failed:"; tail -n 20 "$OUT"/*.err
  exit 1
fi
lost=$(for n in "${NS[@]}"; do ip netns exec "$n" nft list counter inet jamnet_loss lost; done | awk '/packets/ {s += $2} END {print s + 0}')

python3 - "$OUT" "$lost" "$WARMUP_S" "$P99_LIMIT_US" "$P99_GUARD_US" "${OFFSETS[*]}" "${DRIFTS[*]}" "$TRANSPORT_TOL_US" <<'EOF'
import json, math, sys
out, kernel_lost, warmup_s, limit_us, guard_us = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
offsets = [int(x) for x in sys.argv[6].split()]
drifts = [float(x) for x in sys.argv[7].split()]
transport_tol_us = float(sys.argv[8])
ISSUER = 1
fail = []
def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        fail.append(msg)

def p99(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]

peers = []
for i in range(3):
    rows = [json.loads(l) for l in open(f"{out}/{i}.json") if l.strip()]
    lines, summary = [r for r in rows if "local_ns" in r], rows[-1]
    O, D = offsets[i], drifts[i]
    # Invert the injected clock for a local reading.
    def mono_of(local, O=O, D=D):
        return (local - O) / (1 + D * 1e-6)
    applied = [r for r in rows if "transport" in r and "seq" in r]
    for r in applied:
        r["mono_target"] = mono_of(r["local_target_ns"])
        # Control: acting when the raw local clock reads the session timestamp.
        r["mono_raw"] = mono_of(r["session_target_ns"])
    for r in lines:
        # Invert the injected clock (SkewedClock: mono + ⌊mono·D·1e-6⌋ + O; the floor is < 1 ns).
        r["mono"] = (r["local_ns"] - O) / (1 + D * 1e-6)
        # The line's own monotonic reading comes right after local_ns.
        assert 0 <= r["monotonic_ns"] - r["mono"] < 5e6, (i, r)
    peers.append({"i": i, "id": summary["peer_id"], "lines": lines, "summary": summary, "applied": applied})

t0 = min(p["lines"][0]["mono"] for p in peers)
start = max(p["lines"][0]["mono"] for p in peers) + warmup_s * 1e9
end = min(p["lines"][-1]["mono"] for p in peers)
for p in peers:
    # Up to the first peer's last clock line: a peer's line printed after
    # another peer has stopped (and said goodbye) sees a different session.
    p["late"] = [r for r in p["lines"] if start <= r["mono"] <= end and r["session_source"] == "clock_drift_arbiter"]

masters = {r["master"] for p in peers for r in p["late"]}
check(len(masters) == 1 and None not in masters, f"after {warmup_s:.0f} s all peers agree on one master (saw {masters})")
# Peer ids print as 8 lower-case hex digits, so string order is u32 order.
master_id = min(p["id"] for p in peers)
check(masters == {master_id}, f"the master is the lowest peer id {master_id}")
m = next(p for p in peers if p["id"] == master_id)
check(len(m["late"]) >= 10, f"master printed {len(m['late'])} clock lines after the warm-up")

# The session timeline is the master's session clock: linear in its local
# clock (identity for the founder), hence in true monotonic time.
xs = [r["mono"] for r in m["late"]]
ys = [r["session_ns"] for r in m["late"]]
n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
def truth(mono):
    return my + slope * (mono - mx)
resid = max(abs(y - truth(x)) for x, y in zip(xs, ys))
check(resid < 1000, f"master's session clock is linear in CLOCK_MONOTONIC (max residual {resid:.0f} ns, rate {(slope - 1) * 1e6:+.2f} ppm; its injected drift {drifts[m['i']]:+.0f} ppm)")

report = []
for p in peers:
    if p is m:
        continue
    late = p["late"]
    check(len(late) >= 10 and all(r["synced"] for r in late),
          f"clk-{p['i']} ({offsets[p['i']] / 1e6:+.0f} ms, {drifts[p['i']]:+.0f} ppm): {len(late)} lines after the warm-up, all synced")
    if not late:
        continue
    errs = [r["session_ns"] - truth(r["mono"]) for r in late]
    abs_us = [abs(e) / 1e3 for e in errs]
    # Drift of the error over the measured span (how well the rate is followed).
    ts = [r["mono"] for r in late]; mt = sum(ts) / len(ts); me = sum(errs) / len(errs)
    drift_err = sum((t - mt) * (e - me) for t, e in zip(ts, errs)) / max(sum((t - mt) ** 2 for t in ts), 1) * 1e6
    q = p99(abs_us)
    worst = max(range(len(errs)), key=lambda k: abs(errs[k]))
    print(f"info clk-{p['i']}: error µs by second from {warmup_s:.0f} s: " + " ".join(f"{e / 1e3:+.0f}" for e in errs)
          + f" (worst at {(late[worst]['mono'] - t0) / 1e9:.1f} s)")
    med = sorted(abs_us)[len(abs_us) // 2]
    report.append({"name": f"clk-{p['i']}", "peer_id": p["id"], "samples": len(errs),
                   "offset_error_us_p99": round(q, 1), "offset_error_us_p50": round(med, 1),
                   "offset_error_us_mean": round(sum(errs) / len(errs) / 1e3, 1),
                   "error_drift_ppm": round(drift_err, 2)})
    check(q <= guard_us, f"clk-{p['i']}: offset error p99 {q:.1f} µs ≤ guard {guard_us:.0f} µs (p50 {med:.1f} µs, {len(errs)} samples)")
    # Negative control: the same measurement of the raw local clock (no
    # arbiter) must be far off, or the check above could not fail.
    raw = p99([abs(r["local_ns"] - truth(r["mono"])) / 1e3 for r in late])
    check(raw > limit_us, f"clk-{p['i']}: control: its raw local clock is {raw:.0f} µs off the session (> {limit_us:.0f} µs)")

if report:
    q99 = sorted(r["offset_error_us_p99"] for r in report)
    median = (q99[(len(q99) - 1) // 2] + q99[len(q99) // 2]) / 2
    met = sum(1 for q in q99 if q <= limit_us)
    check(median <= limit_us, f"median over followers of offset error p99 {median:.1f} µs ≤ {limit_us:.0f} µs")
    print(f"info issue target p99 ≤ {limit_us:.0f} µs per peer: met by {met} of {len(q99)} followers this run")
check(kernel_lost > 0, f"kernel dropped {kernel_lost} datagrams (nftables 2%)")
for p in peers:
    imp = p["summary"]["impairment"]
    check(imp and imp["entered"] > 100, f"clk-{p['i']}: {imp and imp['entered']} datagrams went through the 5 ± 2 ms stage")
    clk = p["summary"]["clock"]
    print(f"info clk-{p['i']}: hand-offs {clk and clk['handoffs']}, drops {dict((k, v) for k, v in p['summary']['drops'].items() if v)}")

# ---- transport start alignment ----
issuer = peers[ISSUER]
# Commands landing after the warm-up and before the first peer's last
# clock line (`end`, <1 s before it stops: a command at the very end may
# find a peer already gone).
cmds = [r for r in issuer["applied"] if r["own"] and start <= r["mono_target"] <= end]
check(len(cmds) >= 5, f"clk-{ISSUER} issued {len(cmds)} transport commands landing after the warm-up (≥ 5; {issuer['summary']['transport']['issued']} in all)")
spreads, errs_master, errs_median = [], [], []
control = {p["i"]: [] for p in peers if p is not m}
for c in cmds:
    key = (c["from"], c["seq"])
    at, raw = {}, {}
    for p in peers:
        got = [r for r in p["applied"] if (r["from"], r["seq"]) == key]
        check(len(got) == 1 and not got[0]["late"],
              f"seq {c['seq']} ({c['transport']}): clk-{p['i']} applied it {len(got)}× (once, not late)")
        if got:
            at[p["i"]] = got[0]["mono_target"]
            raw[p["i"]] = got[0]["mono_raw"]
    if len(at) != 3:
        continue
    ts = sorted(at.values())
    med = ts[1]
    ref = at[m["i"]]
    spread = (ts[-1] - ts[0]) / 1e3
    em = {i: (t - ref) / 1e3 for i, t in at.items()}
    spreads.append(spread)
    for i, t in at.items():
        errs_median.append(abs(t - med) / 1e3)
        if i != m["i"]:
            errs_master.append(abs(em[i]))
            control[i].append(abs(raw[i] - raw[m["i"]]) / 1e3)
    worst = max(abs(e) for e in em.values())
    print(f"info seq {c['seq']:2d} {c['transport']:4s} at {(ref - t0) / 1e9:5.2f} s: vs master µs "
          + " ".join(f"clk-{i} {em[i]:+7.1f}" for i in sorted(em)) + f" | spread {spread:.1f} µs")
    check(worst <= transport_tol_us,
          f"seq {c['seq']}: every peer's start within ±{transport_tol_us:.0f} µs of the master's (worst {worst:.1f} µs, spread {spread:.1f} µs)")
lateness = {p["i"]: sorted((r["local_applied_ns"] - r["local_target_ns"]) / 1e3 for r in p["applied"] if r["mono_target"] >= start) for p in peers}
def med_of(xs):
    return xs[len(xs) // 2] if xs else float("nan")
transport_report = {}
if spreads:
    transport_report = {
        "commands": len(spreads),
        "spread_us_median": round(med_of(sorted(spreads)), 1), "spread_us_max": round(max(spreads), 1),
        "error_vs_master_us_median": round(med_of(sorted(errs_master)), 1), "error_vs_master_us_max": round(max(errs_master), 1),
        "error_vs_median_us_median": round(med_of(sorted(errs_median)), 1), "error_vs_median_us_max": round(max(errs_median), 1),
        "control_raw_error_us_max": {f"clk-{i}": round(max(v), 1) for i, v in control.items() if v},
        "wakeup_lateness_us_median": {f"clk-{i}": round(med_of(v), 1) for i, v in lateness.items()},
        "wakeup_lateness_us_max": {f"clk-{i}": round(max(v), 1) if v else None for i, v in lateness.items()},
    }
    print(f"info transport: {len(spreads)} commands, spread median {transport_report['spread_us_median']} µs max {transport_report['spread_us_max']} µs; "
          f"|error vs master| median {transport_report['error_vs_master_us_median']} µs max {transport_report['error_vs_master_us_max']} µs; "
          f"|error vs median| median {transport_report['error_vs_median_us_median']} µs max {transport_report['error_vs_median_us_max']} µs")
    print(f"info transport wake-up lateness (applied − target, µs): median {transport_report['wakeup_lateness_us_median']} max {transport_report['wakeup_lateness_us_max']}")
    for i, v in control.items():
        check(bool(v) and max(v) > transport_tol_us,
              f"control: clk-{i} on its raw local clock (no mapping) starts up to {max(v, default=0):.0f} µs off the master (> {transport_tol_us:.0f} µs)")
for p in peers:
    t = p["summary"]["transport"]
    print(f"info clk-{p['i']} transport counters: {t}")
print(json.dumps({"master": master_id, "warmup_s": warmup_s, "kernel_lost": kernel_lost, "peers": report, "transport": transport_report}))
sys.exit(1 if fail else 0)
EOF
echo "42-sync-netns: passed"
