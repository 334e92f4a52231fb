#!/usr/bin/env bash
# Start this node's share of a multi-node `accelerate launch`. Every node runs the same command; only
# NODE_RANK differs. Everything after the script name is passed to `accelerate launch` as the program, e.g.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example MASTER_PORT=29500 \
#     infra/scripts/launch_node.sh -m flows.cli phase1 --params params.wan.yaml
#
# Called by infra/k8s/train-job.yaml (rank = the Indexed Job's completion index) and infra/slurm/train.sbatch
# (rank = SLURM_NODEID). Environment:
#   NNODES, NODE_RANK, MASTER_ADDR   required; MASTER_ADDR is node 0's resolvable name or IP
#   MASTER_PORT                      default 29500
#   GPUS_PER_NODE                    default 8 (one process per GPU)
#   ACCELERATE_CONFIG                default infra/accelerate/multinode.yaml
#   WAIT_FOR_MASTER_S                default 600: how long nodes > 0 wait for MASTER_ADDR to resolve
set -euo pipefail

: "${NNODES:?set NNODES (number of nodes)}"
: "${NODE_RANK:?set NODE_RANK (0..NNODES-1)}"
: "${MASTER_ADDR:?set MASTER_ADDR (node 0 address)}"
MASTER_PORT="${MASTER_PORT:-29500}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
ACCELERATE_CONFIG="${ACCELERATE_CONFIG:-infra/accelerate/multinode.yaml}"

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PROGRAM [ARGS...]   (e.g. -m flows.cli phase1 --params params.wan.yaml)" >&2
    exit 2
fi
if ! [ "$NODE_RANK" -ge 0 ] 2>/dev/null || [ "$NODE_RANK" -ge "$NNODES" ]; then
    echo "$0: NODE_RANK=$NODE_RANK is outside 0..$((NNODES - 1))" >&2
    exit 2
fi

# Pods/hosts may start before node 0's name resolves (a Kubernetes headless-service record appears only once
# pod 0 has an address); torchrun gives up on a name that does not resolve, so wait for it first.
if [ "$NODE_RANK" -ne 0 ]; then
    python - "$MASTER_ADDR" "${WAIT_FOR_MASTER_S:-600}" <<'PY'
import socket, sys, time
host, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.getaddrinfo(host, None)
        break
    except socket.gaierror as exc:
        if time.monotonic() > deadline:
            sys.exit(f"[launch_node] MASTER_ADDR {host!r} did not resolve: {exc}")
        time.sleep(2)
PY
fi

echo "[launch_node] node $NODE_RANK/$NNODES on $(hostname), master $MASTER_ADDR:$MASTER_PORT," \
     "$GPUS_PER_NODE processes, config $ACCELERATE_CONFIG" >&2
exec accelerate launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$NNODES" \
    --num_processes "$((NNODES * GPUS_PER_NODE))" \
    --machine_rank "$NODE_RANK" \
    --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" \
    "$@"
