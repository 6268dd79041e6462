"""Multiaddrs as real peers advertise them, and ones our decoders must drop one by one."""

from hypothesis import strategies as st
from multiaddr import Multiaddr

# What kubo and other peers advertise: every one must survive decoding.
REAL_WORLD_ADDRS = [
    Multiaddr(text).to_bytes()
    for text in (
        "/ip4/147.75.83.83/tcp/4001",
        "/ip4/147.75.83.83/udp/4001/quic-v1",
        "/ip6/2604:1380:4602:5c00::3/udp/4001/quic-v1/webtransport"
        "/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g"
        "/certhash/uEiAkJvKxxb4MFGXpV1p8_Z0ryJCIk8H-5WzmWmymQjUZ8A",
        "/dns4/node.example.com/tcp/443/wss",
        "/dns6/node.example.com/tcp/443/tls/sni/node.example.com/ws",
        "/ip4/1.2.3.4/tcp/4001/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN/p2p-circuit",
        "/ip4/1.2.3.4/udp/4001/webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g",
    )
]
IP4 = Multiaddr("/ip4/1.2.3.4").to_bytes()
UNUSABLE_ADDRS = [
    IP4 + b"\xff\x7f\x00\x01",  # protocol code 0x3fff: newer than our table
    b"\xa1\x8f\x02\x04" + IP4,  # unknown code first
    b"\x04\x01\x02",  # truncated ip4
    IP4 + b"\xa5\x03",  # /p2p without its peer ID
    IP4 * 60,  # over MAX_ADDR_SIZE
]
JUNK_ADDRS = st.one_of(st.sampled_from(UNUSABLE_ADDRS), st.binary(max_size=40).map(lambda b: b"\xff\x7f" + b))
