#!/bin/sh
# Installs the Debian packages the test suite runs against (a real mosquitto broker, a real tinyproxy,
# Node.js for the Node clients).
# Does nothing when they are present; says what to do when it cannot install them.
set -eu
missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v mosquitto_pub >/dev/null 2>&1 || missing="$missing mosquitto-clients"
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || missing="$missing tinyproxy"
# Node.js and npm run the Node clients of the conformance tests (rhea, the Azure IoT Node SDK).
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The package enables a system broker on 1883; tests start their own.
    (service mosquitto stop >/dev/null 2>&1 || true)
    # Likewise tinyproxy on 8888: the proxy tests start their own.
    (service tinyproxy stop >/dev/null 2>&1 || true)
else
    echo "system-deps: please install:$missing (e.g. sudo apt-get install$missing)" >&2
    exit 1
fi
