#!/bin/sh
# Test-only PKI for examples/mqtt.proxy.x509, made with the openssl CLI.
# Every key is generated here, on this machine; none is committed.
#
#   ./make-certs.sh init              Server CA + the proxy's `localhost` key
#                                     (tls/localhost.p12), Devices CA
#                                     (tls/devices-ca.pem), an empty CRL
#                                     (tls/crl/devices-ca.crl)
#   ./make-certs.sh device <cn>       a device certificate issued by the
#                                     Devices CA: tls/devices/<cn>.pem, .key
#   ./make-certs.sh revoke <cn>       revokes it and rewrites the CRL, which
#                                     the running proxy uses at its next
#                                     handshake
#   ./make-certs.sh crl               rewrites the CRL (e.g. before its
#                                     nextUpdate, 30 days after it was made)
#
# Environment:
#   TLS_DIR            where to write (default: tls/ beside this script)
#   KEYSTORE_PASSWORD  password of tls/localhost.p12 (default: generated),
#                      the one zilla.yaml reads from the same variable
#   CA_NAME            the device CA's common name for `init` (default:
#                      Devices CA, the issuer the x509 guard's role names)
#   NOT_BEFORE, NOT_AFTER
#                      a device certificate's validity for `device`, as
#                      YYYYMMDDHHMMSSZ (UTC); default: now for 365 days
set -eu

here=$(cd "$(dirname "$0")" && pwd)
TLS_DIR=${TLS_DIR:-$here/tls}
KEYSTORE_PASSWORD=${KEYSTORE_PASSWORD:-generated}
CA_NAME=${CA_NAME:-Devices CA}
# `openssl ca` reads its database and the CA's files from here
# (openssl.cnf names it as $ENV::CA_DIR).
CA_DIR=$TLS_DIR/ca
export CA_DIR

cnf=$CA_DIR/openssl.cnf

usage() {
  sed -n '2,25p' "$0" >&2
  exit 2
}

# An EC P-256 key (PKCS#8 PEM), readable by the owner only.
key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

# The CRL, written beside and renamed into place: the proxy never reads a
# half-written list.
crl() {
  mkdir -p "$TLS_DIR/crl"
  openssl ca -config "$cnf" -gencrl -out "$TLS_DIR/crl/.devices-ca.crl.new" 2>/dev/null
  mv "$TLS_DIR/crl/.devices-ca.crl.new" "$TLS_DIR/crl/devices-ca.crl"
}

init() {
  if [ -e "$CA_DIR/index.txt" ]; then
    echo "$TLS_DIR is made already; remove it to start over" >&2
    exit 1
  fi
  mkdir -p "$CA_DIR/newcerts" "$TLS_DIR/devices"
  : >"$CA_DIR/index.txt"
  echo 'unique_subject = no' >"$CA_DIR/index.txt.attr"
  echo 1000 >"$CA_DIR/serial"
  echo 1000 >"$CA_DIR/crlnumber"
  cat >"$cnf" <<'EOF'
# `openssl ca` for the Devices CA (make-certs.sh).
[ ca ]
default_ca = devices_ca

[ devices_ca ]
dir = $ENV::CA_DIR
database = $dir/index.txt
serial = $dir/serial
# A crlnumber makes `openssl ca -gencrl` write version 2 lists, which
# the proxy requires.
crlnumber = $dir/crlnumber
new_certs_dir = $dir/newcerts
certificate = $dir/devices-ca.pem
private_key = $dir/devices-ca.key
default_md = sha256
default_days = 365
default_crl_days = 30
policy = policy_cn
unique_subject = no
copy_extensions = none
x509_extensions = device_ext
crl_extensions = crl_ext

[ policy_cn ]
commonName = supplied

[ device_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ crl_ext ]
authorityKeyIdentifier = keyid

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

  # The CA of the proxy's own certificate: clients trust tls/server-ca.pem.
  key "$CA_DIR/server-ca.key"
  openssl req -config "$cnf" -x509 -new -key "$CA_DIR/server-ca.key" -subj "/CN=Server CA" \
    -days 3650 -extensions ca_ext -out "$TLS_DIR/server-ca.pem"
  key "$CA_DIR/localhost.key"
  openssl req -config "$cnf" -new -key "$CA_DIR/localhost.key" -subj "/CN=localhost" \
    -out "$CA_DIR/localhost.csr"
  openssl x509 -req -in "$CA_DIR/localhost.csr" -CA "$TLS_DIR/server-ca.pem" \
    -CAkey "$CA_DIR/server-ca.key" -CAcreateserial -days 825 \
    -extfile "$cnf" -extensions server_ext -out "$CA_DIR/localhost.pem" 2>/dev/null
  openssl pkcs12 -export -name localhost -inkey "$CA_DIR/localhost.key" \
    -in "$CA_DIR/localhost.pem" -certfile "$TLS_DIR/server-ca.pem" \
    -passout "pass:$KEYSTORE_PASSWORD" -out "$TLS_DIR/localhost.p12"

  # The CA whose certificates the proxy accepts from devices.
  key "$CA_DIR/devices-ca.key"
  openssl req -config "$cnf" -x509 -new -key "$CA_DIR/devices-ca.key" -subj "/CN=$CA_NAME" \
    -days 3650 -extensions ca_ext -out "$CA_DIR/devices-ca.pem"
  # The vault's trust store (PEM: alias `devices-ca`, the file's stem).
  cp "$CA_DIR/devices-ca.pem" "$TLS_DIR/devices-ca.pem"
  crl
}

device() {
  cn=$1
  dates=""
  if [ -n "${NOT_BEFORE:-}" ]; then dates="-startdate $NOT_BEFORE"; fi
  if [ -n "${NOT_AFTER:-}" ]; then dates="$dates -enddate $NOT_AFTER"; fi
  key "$TLS_DIR/devices/$cn.key"
  openssl req -config "$cnf" -new -key "$TLS_DIR/devices/$cn.key" -subj "/CN=$cn" \
    -out "$CA_DIR/$cn.csr"
  # shellcheck disable=SC2086 # $dates is empty or two options
  openssl ca -config "$cnf" -batch -notext $dates -in "$CA_DIR/$cn.csr" \
    -out "$TLS_DIR/devices/$cn.pem" 2>/dev/null
}

revoke() {
  openssl ca -config "$cnf" -revoke "$TLS_DIR/devices/$1.pem" 2>/dev/null
  crl
}

[ $# -ge 1 ] || usage
case $1 in
  init) [ $# -eq 1 ] || usage; init ;;
  device) [ $# -eq 2 ] || usage; device "$2" ;;
  revoke) [ $# -eq 2 ] || usage; revoke "$2" ;;
  crl) [ $# -eq 1 ] || usage; crl ;;
  *) usage ;;
esac
