#!/bin/sh
# udhcpc script of the test/vmguest guest: applies a lease of a /32 whose gateway
# (169.254.1.1 on Tabby) is in no subnet of ours, so every route is added on-link.
# Option 121 (staticroutes) wins over option 3 (router), as RFC 3442 says.
say() { echo "TABBY-VMGUEST: $*" >/dev/console; }

event="$1"
case "$event" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
leasefail | nak)
	say "dhcp failed event=$event iface=$interface"
	;;
bound | renew)
	cidr="$ip/${mask:-32}"
	# A new lease, or a renewal to another address: drop the old address (and its routes).
	if [ "$event" = bound ] || ! ip -4 addr show dev "$interface" | grep -q "inet $cidr "; then
		ip -4 addr flush dev "$interface"
	fi
	ip addr replace "$cidr" dev "$interface" || { say "dhcp failed event=addr cidr=$cidr"; exit 1; }
	gw=
	if [ -n "$staticroutes" ]; then
		# "dst/len gw dst/len gw ...": gw 0.0.0.0 means on the link.
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			if [ "$2" = 0.0.0.0 ]; then
				ip route replace "$1" dev "$interface" scope link
			else
				ip route replace "$2" dev "$interface" scope link
				ip route replace "$1" via "$2" dev "$interface" onlink
				[ "$1" = 0.0.0.0/0 ] && gw="$2"
			fi
			shift 2
		done
	elif [ -n "$router" ]; then
		for r in $router; do
			ip route replace "$r" dev "$interface" scope link
			ip route replace default via "$r" dev "$interface" onlink
			gw="$r"
			break
		done
	fi
	say "dhcp ok event=$event ip=$cidr router=${gw:-none} uptime=$(cut -d' ' -f1 /proc/uptime)"
	;;
esac
exit 0
