#!/bin/bash
# The performance benchmark in one command (docs/performance.md):
#
#   sudo bench/run.sh                 # the full run: 1,000 and 100,000 users
#   sudo bench/run.sh --users 200 …   # any otpd-bench option
#   sudo bench/run.sh --postgres …    # otpd on a throw-away PostgreSQL server
#
# Installs the peer modules (Debian's libpam-google-authenticator and
# libpam-oath) when missing, builds otpd, pam_otpd.so and the benchmark in
# release mode (in $CARGO_TARGET_DIR when set, else target/), and runs
# otpd-bench with the arguments given.
# On a machine without a syslog daemon (no /dev/log: containers, CI) it runs
# in a private mount namespace with an overlay on /dev, where the benchmark
# serves /dev/log itself; the host's /dev is never changed.
#
# --before DIR (taken by this script) first runs the benchmark of an
# earlier build with the same arguments: DIR holds that build's otpd,
# libpam_otpd.so and otpd-bench (and optionally COMMIT, its commit). Both
# runs happen in this one invocation, on the same machine, one after the
# other, each with its own pam_permit floor: compare their ratios.
#
# --postgres (taken by this script, not passed on) also installs Debian's
# postgresql when missing, starts a cluster of its own in a temporary
# directory (127.0.0.1 and a free port only, SCRAM password, fsync and
# synchronous_commit on as in production), gives otpd-bench
# --postgres-url for it, prints the CPU time the server's processes used,
# and stops the cluster and removes its directory at the end, also on
# failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: needs root (pam_google_authenticator's user=root, otpd's trusted caller, the mount namespace)" >&2
    exit 1
fi

postgres=false
before=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --postgres) postgres=true ;;
        --before)
            if [ $# -lt 2 ] || [ ! -x "$2/otpd-bench" ] || [ ! -x "$2/otpd" ] || [ ! -f "$2/libpam_otpd.so" ]; then
                echo "bench/run.sh: --before DIR needs DIR/otpd-bench, DIR/otpd and DIR/libpam_otpd.so of an earlier build" >&2
                exit 2
            fi
            before=$(readlink -f "$2")
            shift
            ;;
        *) args+=("$1") ;;
    esac
    shift
done

packages=(libpam-google-authenticator libpam-oath libpam0g-dev libnss-wrapper)
if $postgres; then
    packages+=(postgresql)
fi
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release --quiet -p otpd -p pam_otpd -p otpd-bench
bench="${CARGO_TARGET_DIR:-target}/release/otpd-bench"

# Everything to undo at the end; the traps run it on any exit.
scratch=""
pg_dir=""
pg_cpu_start=""
cleanup() {
    if [ -n "$pg_dir" ]; then
        if [ -f "$pg_dir/data/postmaster.pid" ]; then
            if [ -n "$pg_cpu_start" ]; then
                pg_server_cpu "during the run" "$pg_cpu_start"
            fi
            as_postgres "$pg_bin/pg_ctl" stop -D "$pg_dir/data" -m fast -w -t 30 >/dev/null ||
                as_postgres "$pg_bin/pg_ctl" stop -D "$pg_dir/data" -m immediate -w -t 10 >/dev/null ||
                true
        fi
        rm -rf "$pg_dir"
    fi
    if [ -n "$scratch" ]; then
        rm -rf "$scratch"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server's own processes run as uid/gid 65534 (initdb refuses root),
# from the cluster's directory (the caller's may be closed to them).
as_postgres() {
    (cd "$pg_dir" && LC_ALL=C setpriv --reuid=65534 --regid=65534 --clear-groups "$@")
}

# CPU seconds of the server so far: the postmaster's own and its ended
# children's (cutime, cstime), and its live children's (the backends).
pg_server_cpu_ticks() {
    local postmaster
    postmaster=$(head -n 1 "$pg_dir/data/postmaster.pid")
    # /proc/PID/stat with "(comm)" cut out: $1 pid, $3 ppid, $13 utime,
    # $14 stime, $15 cutime, $16 cstime, in clock ticks. (A process may
    # end between the glob and cat.)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed 's/^\([0-9]*\) (.*) /\1 /' |
        awk -v pm="$postmaster" '
            $1 == pm { ticks += $13 + $14 + $15 + $16 }
            $3 == pm { ticks += $13 + $14 }
            END { print ticks + 0 }'
}

# Prints the server's CPU time since `$2` ticks.
pg_server_cpu() {
    local now
    now=$(pg_server_cpu_ticks) || return 0
    echo "bench/run.sh: PostgreSQL server CPU $1 (all its processes, enrolment included):" \
        "$(awk -v t=$((now - $2)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f s", t / hz }')"
}

start_postgres() {
    local major
    major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf '%f\n' | sort -n | tail -n 1)
    pg_bin="/usr/lib/postgresql/$major/bin"
    pg_dir=$(mktemp -d /tmp/otpd-bench-pg.XXXXXX)
    chmod 755 "$pg_dir"
    chown 65534:65534 "$pg_dir"
    local password
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$pg_dir/pwfile")
    chown 65534:65534 "$pg_dir/pwfile"
    as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U otpd -A scram-sha-256 \
        --pwfile="$pg_dir/pwfile" -E UTF8 --locale=C --no-instructions >/dev/null
    rm -f "$pg_dir/pwfile"
    local attempt port=""
    for attempt in 1 2 3 4 5; do
        # A port nothing listens on now; if the server loses it to someone
        # else before binding, try another.
        port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        cat >"$pg_dir/data/otpd-bench.conf" <<EOF
# Written by bench/run.sh --postgres.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pg_dir'
max_connections = 200
fsync = on
synchronous_commit = on
EOF
        chown 65534:65534 "$pg_dir/data/otpd-bench.conf"
        grep -q "^include 'otpd-bench.conf'" "$pg_dir/data/postgresql.conf" ||
            echo "include 'otpd-bench.conf'" >>"$pg_dir/data/postgresql.conf"
        if as_postgres "$pg_bin/pg_ctl" start -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 30 >/dev/null; then
            break
        fi
        port=""
        if ! grep -q "Address already in use" "$pg_dir/server.log"; then
            break
        fi
    done
    if [ -z "$port" ]; then
        echo "bench/run.sh: the PostgreSQL server did not start:" >&2
        tail -n 30 "$pg_dir/server.log" >&2 || true
        exit 1
    fi
    PGPASSWORD=$password "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U otpd otpd
    pg_cpu_start=$(pg_server_cpu_ticks)
    echo "bench/run.sh: PostgreSQL $major in $pg_dir on 127.0.0.1:$port (fsync on, synchronous_commit on)"
    args=(--postgres-url "postgresql://otpd:$password@127.0.0.1:$port/otpd?sslmode=disable" "${args[@]}")
}

if $postgres; then
    start_postgres
fi

# The runs: the earlier build's first (--before), then this one's.
run_all() {
    if [ -n "$before" ]; then
        echo "== before: $before ($(cat "$before/COMMIT" 2>/dev/null || echo "commit unknown")) =="
        "$before/otpd-bench" --otpd "$before/otpd" --pam-otpd "$before/libpam_otpd.so" "$@"
        echo "== after: this tree ($(git rev-parse --short HEAD 2>/dev/null || echo "commit unknown")) =="
    fi
    "$bench" "$@"
}

if [ -e /dev/log ]; then
    run_all "${args[@]}"
    exit 0
fi

scratch=$(mktemp -d /tmp/otpd-bench-dev.XXXXXX)
mkdir "$scratch/upper" "$scratch/work"
# --propagation private: nothing mounted inside is seen outside. The
# PostgreSQL server, if any, runs outside and is reached over TCP.
unshare --mount --propagation private /bin/bash -c '
    mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev || exit 1
    before=$2 bench=$3
    shift 3
    if [ -n "$before" ]; then
        echo "== before: $before ($(cat "$before/COMMIT" 2>/dev/null || echo "commit unknown")) =="
        "$before/otpd-bench" --otpd "$before/otpd" --pam-otpd "$before/libpam_otpd.so" --syslog-sink "$@" || exit
        # Its sink left the socket file (in this namespace'"'"'s /dev only).
        rm -f /dev/log
        echo "== after: this tree =="
    fi
    exec "$bench" --syslog-sink "$@"
' bash "$scratch" "$before" "$bench" "${args[@]}"
