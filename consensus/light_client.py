"""A client that follows the chain from certified blocks alone, through validator-set changes.

It keeps no state but a height, the state root after it and the validator
set it trusts; it executes nothing. Each decided block comes with its commit
(the certificate of block h is carried in block h + 1, or served by a node);
the commit must verify against the trusted set, and the block's
``next_validators`` digest, signed with it, says which set signs the next
height. When that digest changes, the client takes the new set from anyone
(a node's ``meta/validators`` entry, say) once its digest matches: the old
set's signatures vouch for the new one, as in CometBFT's light client
(sequential verification; skipping heights is not offered). A query's
Merkle proof is then checked with ``certified_root(commit, chain_id,
client.validators)`` against the root the next block certifies.
"""

from __future__ import annotations

from .ledger import InvalidBlock, decode_block
from .validators import ValidatorSet
from .wire import Commit, RejectedMessage, verify_commit


class LightClientError(ValueError):
    """The commit or the offered validator set does not verify; nothing was taken."""


class NextSetNeeded(LightClientError):
    """The block hands over to another validator set: :meth:`LightClient.advance` needs it."""

    def __init__(self, height: int, digest: bytes):
        super().__init__(f"block {height} hands over to the validator set {digest.hex()[:16]}…: give that set")
        self.height = height
        self.digest = digest


class LightClient:
    """Follows certified blocks from ``height`` (0: genesis) and the set that signs ``height + 1``."""

    def __init__(self, chain_id: str, validators: ValidatorSet, height: int = 0):
        self.chain_id = chain_id
        self.validators = validators
        self.height = height
        # The state root after ``height - 1`` (block ``height`` names its parent's root).
        self.root: bytes | None = None

    def advance(self, commit: Commit, next_validators: ValidatorSet | None = None) -> int:
        """Take block ``height + 1`` and its commit; the new height. ``next_validators`` is needed (and checked)
        only when the block hands over to another set (:class:`NextSetNeeded` otherwise)."""
        try:
            verify_commit(commit, self.chain_id, self.validators)
            block = decode_block(commit.value)
        except (RejectedMessage, InvalidBlock) as exc:
            raise LightClientError(f"block {self.height + 1}: {exc}") from None
        if block.height != self.height + 1:
            raise LightClientError(f"a commit of block {block.height}, not of {self.height + 1}")
        following = self.validators
        if block.next_validators != following.digest():
            if next_validators is None:
                raise NextSetNeeded(block.height, block.next_validators)
            if next_validators.digest() != block.next_validators:
                raise LightClientError(f"the offered set is not the one block {block.height} names")
            following = next_validators
        self.validators, self.height, self.root = following, block.height, block.parent_root
        return self.height


__all__ = ["LightClient", "LightClientError", "NextSetNeeded"]
