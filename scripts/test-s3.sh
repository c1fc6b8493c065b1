#!/usr/bin/env bash
# `npm run test:s3`: brings up a throwaway Ceph RADOS Gateway (scripts/ceph-s3.sh), runs the S3
# test files against it one at a time, and tears the cluster down by PID on every exit (tests
# passing or failing, Ctrl-C), so nothing is left running. browser.test.ts runs the S3 backend in
# headless Chromium, found or installed as for `npm run test:browser`.
#
#   npm run test:s3                       # all of packages/node/test/s3/*.test.ts
#   npm run test:s3 -- FILE...            # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
# A folder of our own, so a cluster someone else runs in /tmp/ceph-s3 is never touched.
export CEPH_S3_DIR=${CEPH_S3_DIR:-/tmp/locket-ceph-s3-$$}
trap 'bash scripts/ceph-s3.sh down' EXIT
trap 'exit 130' INT TERM
bash scripts/ceph-s3.sh up >/dev/null
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("packages/node/test/s3/*.test.ts")
node --test --test-concurrency=1 --test-timeout=900000 "${files[@]}"
