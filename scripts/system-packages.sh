# Sourced by scripts/setup and .ci/run: the system packages the development environment
# needs beyond Python. mysqlclient (a test dependency: the DB-API probe on Django's MySQL
# driver) has no Linux wheels; pip builds it from source with a C compiler, against the
# MySQL/MariaDB client library that pkg-config finds.

missing_build_packages() {  # the apt packages missing here, on one line (empty: none)
    local need=()
    command -v pkg-config >/dev/null || need+=(pkg-config)
    pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists mariadb 2>/dev/null \
        || need+=(default-libmysqlclient-dev)
    command -v cc >/dev/null || need+=(gcc)
    echo "${need[*]}"
}

apt_install() {  # apt_install PACKAGE...: as root, quietly
    echo "installing ${*} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
}
