// js-libp2p (libp2p 3.3.11, QUIC by @chainsafe/libp2p-quic 2.1.1, which runs quinn) as a
// /perf/1.0.0 server and client, for bench/transport.py's js-libp2p comparison.
//   node js_libp2p_perf.mjs server            -> prints {"addr": ...}, serves until killed
//   node js_libp2p_perf.mjs client ADDR BYTES -> one download of BYTES on one stream, timed from
//                                               the request to the last byte (connection set up
//                                               before), prints {"bytes", "seconds", "mb_per_s"}
// The perf protocol: the client writes the byte count it wants as a u64 (big-endian), closes its
// side, and reads; the server sends that many bytes and closes.
import { createLibp2p } from 'libp2p'
import { quic } from '@chainsafe/libp2p-quic'
import { multiaddr } from '@multiformats/multiaddr'

// Node 20 lacks Promise.withResolvers (Node 22), which js-libp2p 3 uses.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const PERF = '/perf/1.0.0'
const CHUNK = new Uint8Array(64 * 1024)

async function node (listen) {
  return createLibp2p({
    addresses: { listen },
    transports: [quic()],
    connectionMonitor: { enabled: false }
  })
}

function readU64 (buf) {
  return Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0))
}

async function sendBytes (stream, count) {
  let left = count
  while (left > 0) {
    const n = Math.min(left, CHUNK.length)
    if (!stream.send(CHUNK.subarray(0, n))) await stream.onDrain()
    left -= n
  }
}

const [mode, addr, bytes] = process.argv.slice(2)
if (mode === 'server') {
  const libp2p = await node(['/ip4/127.0.0.1/udp/0/quic-v1'])
  await libp2p.handle(PERF, async (stream) => {
    let header = new Uint8Array(0)
    for await (const chunk of stream) {
      const data = chunk.subarray ? chunk.subarray() : chunk
      if (header.length < 8) header = Uint8Array.from([...header, ...data.subarray(0, 8 - header.length)])
    }
    await sendBytes(stream, readU64(header))
    await stream.close()
  }, { maxInboundStreams: 64 })
  console.log(JSON.stringify({ addr: libp2p.getMultiaddrs()[0].toString() }))
} else {
  const libp2p = await node([])
  const target = multiaddr(addr)
  const want = Number(bytes)
  await libp2p.dial(target)
  const stream = await libp2p.dialProtocol(target, PERF)
  const request = new Uint8Array(8)
  new DataView(request.buffer).setBigUint64(0, BigInt(want))
  const started = performance.now()
  stream.send(request)
  await stream.close()
  let got = 0
  for await (const chunk of stream) got += chunk.byteLength
  const seconds = (performance.now() - started) / 1000
  console.log(JSON.stringify({ bytes: got, seconds, mb_per_s: got / seconds / 1e6 }))
  await libp2p.stop()
}
