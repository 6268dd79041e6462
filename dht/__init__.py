"""HyperMesh Kademlia DHT (``/ipfs/kad/1.0.0``): sans-IO core, trio driver, discovery API.

The node uses :func:`open_discovery` (discovery.py); the core is
:class:`KademliaCore` (kademlia.py); sim.py runs the same core in a
deterministic simulator.
"""

from .discovery import Discovery, open_discovery
from .kademlia import KadConfig, KademliaCore, Mode
from .keys import Cid
from .messages import PROTOCOL_ID, DhtProtocolError, PeerInfo
from .records import RecordError, ServiceRecord

__all__ = [
    "Cid",
    "DhtProtocolError",
    "Discovery",
    "KadConfig",
    "KademliaCore",
    "Mode",
    "PROTOCOL_ID",
    "PeerInfo",
    "RecordError",
    "ServiceRecord",
    "open_discovery",
]
