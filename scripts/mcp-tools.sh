#!/usr/bin/env bash
# Installs, under .data/mcp-tools/, what the MCP tests drive the server with: the official
# Python SDK (`mcp`, from PyPI) and the MCP conformance suite with a Node 22 to run it
# (from npm); and `cryptography`, the Ed25519 library of docs/audit.md's Python checker. Safe to run twice. Prints the environment and writes .data/mcp-tools.env.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=${AXON_DATA_DIR:-$root/.data}
tools=$data/mcp-tools
python_sdk='mcp>=2.3,<3'
conformance=0.1.16
conformance_next=0.2.0-alpha.12
node=22
mkdir -p "$tools"

log() { printf '[mcp-tools] %s\n' "$*" >&2; }

if ! command -v npm >/dev/null; then
  log "installing npm (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
if [ ! -d "$tools/py/mcp" ] || [ ! -d "$tools/py/cryptography" ]; then
  log "installing the MCP Python SDK ($python_sdk) and cryptography"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check \
    --root-user-action=ignore --no-warn-conflicts --target "$tools/py" "$python_sdk" cryptography
fi
install_npm() { # folder, packages…
  local dir=$1; shift
  if [ ! -d "$dir/node_modules/@modelcontextprotocol/conformance" ]; then
    log "installing $* (npm)"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund "$@" >/dev/null)
  fi
}
install_npm "$tools/conformance" "node@$node" "@modelcontextprotocol/conformance@$conformance"
install_npm "$tools/conformance-next" "@modelcontextprotocol/conformance@$conformance_next"

cat >"$data/mcp-tools.env" <<ENV
export AXON_MCP_PYTHONPATH=$tools/py
export AXON_NODE=$tools/conformance/node_modules/node/bin/node
export AXON_CONFORMANCE=$tools/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js
export AXON_CONFORMANCE_NEXT=$tools/conformance-next/node_modules/@modelcontextprotocol/conformance/dist/index.js
ENV
cat "$data/mcp-tools.env"
