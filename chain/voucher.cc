#include "chain/voucher.h"

#include <nlohmann/json.hpp>

#include "chain/keccak.h"

namespace gpugrid::chain {

namespace {

void append(bytes& out, const hash32& w) { out.insert(out.end(), w.begin(), w.end()); }

hash32 address_word(const address& a) {
  hash32 w{};
  std::copy(a.b.begin(), a.b.end(), w.begin() + 12);
  return w;
}

}  // namespace

hash32 eip712_domain_separator(const u256& chain_id, const address& contract) {
  bytes enc;
  append(enc, keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"));
  append(enc, keccak256("gpugrid"));
  append(enc, keccak256("1"));
  append(enc, to_word(chain_id));
  append(enc, address_word(contract));
  return keccak256(enc);
}

hash32 voucher_struct_hash(const voucher& v) {
  bytes enc;
  append(enc, keccak256("Voucher(uint256 channel,uint256 chainId,uint256 amount,uint256 nonce)"));
  append(enc, to_word(v.channel));
  append(enc, to_word(v.chain_id));
  append(enc, to_word(v.amount));
  append(enc, to_word(v.nonce));
  return keccak256(enc);
}

hash32 voucher_digest(const voucher& v, const address& contract) {
  bytes enc = {0x19, 0x01};
  append(enc, eip712_domain_separator(v.chain_id, contract));
  append(enc, voucher_struct_hash(v));
  return keccak256(enc);
}

signed_voucher sign_voucher(const secret_key& client, const voucher& v, const address& contract) {
  return {v, contract, client.sign(voucher_digest(v, contract))};
}

expected<address> voucher_signer(const signed_voucher& sv) {
  return recover_signer(voucher_digest(sv.v, sv.contract), sv.sig);
}

std::string voucher_to_json(const signed_voucher& sv) {
  nlohmann::ordered_json j;
  j["channel"] = to_decimal(sv.v.channel);
  j["chain_id"] = to_decimal(sv.v.chain_id);
  j["amount"] = to_decimal(sv.v.amount);
  j["nonce"] = to_decimal(sv.v.nonce);
  j["contract"] = sv.contract.checksummed();
  j["v"] = 27 + sv.sig.v;
  j["r"] = to_hex(sv.sig.r);
  j["s"] = to_hex(sv.sig.s);
  return j.dump();
}

expected<signed_voucher> parse_voucher_json(const std::string& text, const std::string& what) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_input("{}: not a JSON object", what);
  auto str = [&](const char* key) -> expected<std::string> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return invalid_input("{}: field '{}' is missing or not a string", what, key);
    return it->get<std::string>();
  };
  signed_voucher sv;
  const char* number_fields[] = {"channel", "chain_id", "amount", "nonce"};
  u256* targets[] = {&sv.v.channel, &sv.v.chain_id, &sv.v.amount, &sv.v.nonce};
  for (int i = 0; i < 4; ++i) {
    GG_ASSIGN_OR_RETURN(std::string s, str(number_fields[i]));
    GG_ASSIGN_OR_RETURN(*targets[i], parse_uint(s, what + ": " + number_fields[i]));
  }
  GG_ASSIGN_OR_RETURN(std::string c, str("contract"));
  GG_ASSIGN_OR_RETURN(sv.contract, parse_address(c, what + ": contract"));
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_unsigned() || (v->get<uint64_t>() != 27 && v->get<uint64_t>() != 28))
    return invalid_input("{}: field 'v' must be 27 or 28", what);
  sv.sig.v = static_cast<uint8_t>(v->get<uint64_t>() - 27);
  GG_ASSIGN_OR_RETURN(std::string r, str("r"));
  GG_ASSIGN_OR_RETURN(sv.sig.r, hash_from_hex(r, what + ": r"));
  GG_ASSIGN_OR_RETURN(std::string s, str("s"));
  GG_ASSIGN_OR_RETURN(sv.sig.s, hash_from_hex(s, what + ": s"));
  return sv;
}

}  // namespace gpugrid::chain
