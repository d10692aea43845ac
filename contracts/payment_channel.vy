# pragma version ~=0.4.3
# @title gpugrid payment channels
# @notice A client locks the chain's native token in a channel with one provider and pays
#         off-chain with vouchers: EIP-712 signed statements "the client owes the provider
#         AMOUNT in total on CHANNEL of CHAIN", with a nonce that only goes up. The provider
#         redeems the latest voucher whenever it likes (each redeem pays the difference to the
#         last one); after the channel's expiry the client takes back what was never redeemed.
#         A voucher is bound to this contract and chain (EIP-712 domain), to one channel, and
#         can be redeemed at most once (cumulative amount and nonce must both grow).
#         anchor() records a ledger head as a cheap event (no storage).

struct Channel:
    client: address
    provider: address
    deposit: uint256     # everything ever deposited
    redeemed: uint256    # the cumulative amount paid to the provider
    nonce: uint256       # nonce of the last redeemed voucher
    expiry: uint256      # unix time after which the client may withdraw
    closed: bool         # the client has withdrawn the rest

event Opened:
    channel: indexed(uint256)
    client: indexed(address)
    provider: indexed(address)
    deposit: uint256
    expiry: uint256

event Deposited:
    channel: indexed(uint256)
    deposit: uint256
    expiry: uint256

event Redeemed:
    channel: indexed(uint256)
    amount: uint256
    paid: uint256
    nonce: uint256

event Withdrawn:
    channel: indexed(uint256)
    refund: uint256

event Anchored:
    sender: indexed(address)
    head: bytes32
    sequence: uint256

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
VOUCHER_TYPEHASH: constant(bytes32) = keccak256("Voucher(uint256 channel,uint256 chainId,uint256 amount,uint256 nonce)")
NAME_HASH: constant(bytes32) = keccak256("gpugrid")
VERSION_HASH: constant(bytes32) = keccak256("1")
# secp256k1n / 2: signatures with a larger s are the malleable twin of a valid one.
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168
MAX_TIMEOUT: constant(uint256) = 315360000  # ten years

channels: public(HashMap[uint256, Channel])
channel_count: public(uint256)


@view
@internal
def _domain_separator() -> bytes32:
    return keccak256(abi_encode(EIP712_DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))


@view
@external
def domain_separator() -> bytes32:
    return self._domain_separator()


@view
@internal
def _voucher_digest(channel: uint256, amount: uint256, nonce: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(VOUCHER_TYPEHASH, channel, chain.id, amount, nonce))
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@view
@external
def voucher_digest(channel: uint256, amount: uint256, nonce: uint256) -> bytes32:
    return self._voucher_digest(channel, amount, nonce)


@payable
@external
def open(provider: address, timeout: uint256) -> uint256:
    """
    @notice Opens a channel from msg.sender to `provider` holding msg.value, withdrawable by the
            client `timeout` seconds from now. Returns the channel id (1, 2, ...).
    """
    assert provider != empty(address), "no provider"
    assert provider != msg.sender, "provider is the client"
    assert timeout <= MAX_TIMEOUT, "timeout too long"
    id: uint256 = self.channel_count + 1
    self.channel_count = id
    expiry: uint256 = block.timestamp + timeout
    self.channels[id] = Channel(client=msg.sender, provider=provider, deposit=msg.value, redeemed=0,
                                nonce=0, expiry=expiry, closed=False)
    log Opened(channel=id, client=msg.sender, provider=provider, deposit=msg.value, expiry=expiry)
    return id


@payable
@external
def deposit(channel: uint256, expiry: uint256):
    """
    @notice Adds msg.value to an open channel and moves its expiry to `expiry` (never earlier).
    """
    c: Channel = self.channels[channel]
    assert c.client != empty(address), "no such channel"
    assert msg.sender == c.client, "not the client"
    assert not c.closed, "channel closed"
    assert expiry >= c.expiry, "expiry earlier"
    assert expiry <= block.timestamp + MAX_TIMEOUT, "timeout too long"
    c.deposit += msg.value
    c.expiry = expiry
    self.channels[channel] = c
    log Deposited(channel=channel, deposit=c.deposit, expiry=expiry)


@nonreentrant
@external
def redeem(channel: uint256, amount: uint256, nonce: uint256, v: uint8, r: bytes32, s: bytes32):
    """
    @notice Pays the provider amount - redeemed for a voucher signed by the client. Anyone may
            submit it; the money always goes to the channel's provider.
    """
    c: Channel = self.channels[channel]
    assert c.client != empty(address), "no such channel"
    assert not c.closed, "channel closed"
    assert convert(s, uint256) <= HALF_N, "malleable signature"
    signer: address = ecrecover(self._voucher_digest(channel, amount, nonce), v, r, s)
    assert signer != empty(address) and signer == c.client, "wrong signer"
    assert nonce > c.nonce, "voucher already redeemed"
    assert amount > c.redeemed, "nothing new to redeem"
    assert amount <= c.deposit, "voucher exceeds the deposit"
    paid: uint256 = amount - c.redeemed
    c.redeemed = amount
    c.nonce = nonce
    self.channels[channel] = c
    log Redeemed(channel=channel, amount=amount, paid=paid, nonce=nonce)
    raw_call(c.provider, b"", value=paid)


@nonreentrant
@external
def withdraw(channel: uint256):
    """
    @notice After the expiry, returns to the client what the provider has not redeemed and
            closes the channel (later vouchers are refused).
    """
    c: Channel = self.channels[channel]
    assert c.client != empty(address), "no such channel"
    assert msg.sender == c.client, "not the client"
    assert not c.closed, "channel closed"
    assert block.timestamp >= c.expiry, "channel not expired"
    refund: uint256 = c.deposit - c.redeemed
    c.closed = True
    self.channels[channel] = c
    log Withdrawn(channel=channel, refund=refund)
    if refund > 0:
        raw_call(c.client, b"", value=refund)


@external
def anchor(head: bytes32, sequence: uint256):
    """
    @notice Records a ledger head (hash of its last entry and that entry's sequence number)
            as an event; nothing is stored.
    """
    log Anchored(sender=msg.sender, head=head, sequence=sequence)
