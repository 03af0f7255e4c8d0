#!/bin/bash
# The baseline symroute is measured against: what the published SSM-document solutions do,
# one curl per metadata value and one `ip` per change. Same numbering, same end state (rules
# per address, subnet and default route per table, secondary addresses added).
set -eu
IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
TOKEN=$(curl -sf -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600")
md() { curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/$1"; }
PRIMARY_MAC=$(md mac)
for mac in $(md network/interfaces/macs/); do
  mac=${mac%/}
  [ "$mac" = "$PRIMARY_MAC" ] && continue
  dev=$(md network/interfaces/macs/$mac/device-number)
  card=$(md network/interfaces/macs/$mac/network-card || echo 0)
  ips=$(md network/interfaces/macs/$mac/local-ipv4s)
  cidr=$(md network/interfaces/macs/$mac/subnet-ipv4-cidr-block)
  table=$((10000 + 100 * card + dev))
  ifname=$(ip -o link | awk -v m="$mac" '$0 ~ m {sub(":", "", $2); sub("@.*", "", $2); print $2}')
  plen=${cidr#*/}
  net=${cidr%/*}
  gw=$(echo "$net" | awk -F. '{print $1"."$2"."$3"."$4+1}')
  primary=$(echo "$ips" | head -n1)
  ip link set "$ifname" up
  for a in $ips; do
    ip addr show dev "$ifname" | grep -q " $a/" || ip addr add "$a/$plen" dev "$ifname"
  done
  ip route replace "$cidr" dev "$ifname" src "$primary" scope link table "$table"
  ip route replace default via "$gw" dev "$ifname" table "$table"
  for a in $ips; do
    ip rule add from "$a/32" lookup "$table" pref "$table"
  done
done
