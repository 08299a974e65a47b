#!/usr/bin/env bash
# Set up, then run the main job on a real folder: init a local repository, back the
# folder up twice, list the snapshots, restore the latest one and compare it byte for
# byte with the source. Usage: scripts/demo.sh [FOLDER]  (default: Python's standard library)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

source_dir=${1:-$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')}
work=$(mktemp -d /tmp/backvault-demo.XXXXXX)
export BACKVAULT_REPOSITORY="$work/repository"
export BACKVAULT_RECOVERY_KEY_FILE="$work/recovery-key.txt"

echo "== backvault init (BACKVAULT_REPOSITORY=$BACKVAULT_REPOSITORY)"
backvault init --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["recovery_key"])' \
    > "$BACKVAULT_RECOVERY_KEY_FILE"
chmod 600 "$BACKVAULT_RECOVERY_KEY_FILE"
echo "recovery key saved to $BACKVAULT_RECOVERY_KEY_FILE"

echo "== backvault backup $source_dir"
backvault backup "$source_dir"
echo "== backvault backup $source_dir (again: unchanged files are skipped)"
backvault backup "$source_dir"
echo "== backvault snapshots"
backvault snapshots
echo "== backvault restore latest --target $work/restored"
backvault restore latest --target "$work/restored"
echo "== backvault check --read-data"
backvault check --read-data

echo "== comparing the restored tree with the source"
diff -r --no-dereference "$source_dir" "$work/restored$source_dir"
echo "restored tree is identical to $source_dir"
echo "demo files are in $work (remove them with: rm -rf $work)"
