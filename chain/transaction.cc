#include "chain/transaction.h"

#include "chain/keccak.h"
#include "chain/rlp.h"

namespace gpugrid::chain {

namespace {

std::vector<bytes> unsigned_fields(const eip1559_transaction& tx) {
  bytes to = tx.to ? bytes(tx.to->b.begin(), tx.to->b.end()) : bytes();
  return {rlp::encode_uint(tx.chain_id),
          rlp::encode_uint(tx.nonce),
          rlp::encode_uint(tx.max_priority_fee_per_gas),
          rlp::encode_uint(tx.max_fee_per_gas),
          rlp::encode_uint(tx.gas_limit),
          rlp::encode_bytes(to),
          rlp::encode_uint(tx.value),
          rlp::encode_bytes(tx.data),
          rlp::encode_list({})};
}

bytes typed(const bytes& payload) {
  bytes out(payload.size() + 1);
  out[0] = 0x02;
  std::copy(payload.begin(), payload.end(), out.begin() + 1);
  return out;
}

}  // namespace

hash32 signing_hash(const eip1559_transaction& tx) { return keccak256(typed(rlp::encode_list(unsigned_fields(tx)))); }

signed_transaction sign_transaction(const eip1559_transaction& tx, const secret_key& key) {
  signature sig = key.sign(signing_hash(tx));
  std::vector<bytes> fields = unsigned_fields(tx);
  fields.push_back(rlp::encode_uint(sig.v));
  fields.push_back(rlp::encode_uint(from_be(sig.r.data(), 32)));
  fields.push_back(rlp::encode_uint(from_be(sig.s.data(), 32)));
  signed_transaction out;
  out.raw = typed(rlp::encode_list(fields));
  out.hash = keccak256(out.raw);
  return out;
}

}  // namespace gpugrid::chain
