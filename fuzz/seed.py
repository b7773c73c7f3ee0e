#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, from the project's golden tests and
../shared/pcaps/tcpdump (written to fuzz/corpus/TARGET, not committed)."""
import glob, os, re, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.path.join(root, "..", "shared", "pcaps", "tcpdump")


def out(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pcap_records(path):
    """Records of a classic pcap file (pcapng and damaged files: none)."""
    data = open(path, "rb").read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return []
    records, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        if incl > len(data) - off:
            break
        records.append(data[off:off + incl])
        off += incl
    return records


pcaps = sorted(glob.glob(os.path.join(shared, "*.pcap*")))
for path in pcaps:
    name = os.path.basename(path)
    if os.path.getsize(path) <= 65536:
        out("pcap_reader", name, open(path, "rb").read())
    records = [r[:65535] for r in pcap_records(path)[:16]]
    if records:
        seed = b"".join(bytes([(i % 6) << 5 | (i % 3)]) + struct.pack(">H", len(r)) + r for i, r in enumerate(records))
        out("frame_pipeline", name, seed)

flows = set()
for test in glob.glob(os.path.join(root, "tests", "*.rs")) + glob.glob(os.path.join(root, "vswitchd", "core", "src", "**", "*.rs"), recursive=True):
    for m in re.finditer(r'"((?:table=\d+,)?(?:priority=|in_port=|ip,|tcp|udp|arp|actions=)[^"\\]{4,300})"', open(test).read()):
        flows.add(m.group(1))
for i, flow in enumerate(sorted(flows)):
    out("flow_parser", f"flow-{i:04}", flow.encode())

requests = [
    '{"jsonrpc":"2.0","id":1,"method":"transact","params":{"commands":[{"AddBr":{"bridge":"br0"}}]}}',
    '{"jsonrpc":"2.0","id":2,"method":"transact","params":{"commands":[{"AddBr":{"bridge":"br0"}},{"AddPort":{"bridge":"br0","port":"p1","settings":["tag=10"]}}]}}',
    '{"jsonrpc":"2.0","id":3,"method":"transact","params":{"commands":["Show"]}}',
    '{"jsonrpc":"2.0","id":4,"method":"time_warp","params":{"msecs":1000}}',
]
out("control_requests", "requests", "\n".join(requests).encode())
print(f"seeded from {len(pcaps)} captures and {len(flows)} flows")
