# Sourced by scripts/lint and scripts/test: `stage "name"` ends the stage before it (printing
# `stage: <name> <seconds>s`, and appending it to $KUBE_HARNESS_STAGE_LOG when set, which
# .ci/run prints as a table at the end) and starts the next; `stage ""` ends the last one.
# The prefix tells whose stage it is (lint, test).
_stage_name=""
_stage_started=$(date +%s)
stage() {
  local now
  now=$(date +%s)
  if [ -n "$_stage_name" ]; then
    local line="${STAGE_PREFIX:-stage}: $_stage_name $((now - _stage_started))s"
    echo "$line"
    if [ -n "${KUBE_HARNESS_STAGE_LOG:-}" ]; then
      printf '%s\t%s\t%s\n' "${STAGE_PREFIX:-stage}" "$_stage_name" "$((now - _stage_started))" >>"$KUBE_HARNESS_STAGE_LOG"
    fi
  fi
  _stage_name="$1"
  _stage_started=$now
  if [ -n "$1" ]; then echo "== $1"; fi
}
# On exit (a failed command under `set -e`, say), the stage that was running is recorded too,
# with the exit status. A script that sets its own EXIT trap calls _stage_on_exit first in it.
_stage_on_exit() {
  local rc=$?
  if [ -n "$_stage_name" ]; then
    [ "$rc" = 0 ] || _stage_name="$_stage_name (failed: exit $rc)"
    stage ""
  fi
  return 0
}
trap _stage_on_exit EXIT
