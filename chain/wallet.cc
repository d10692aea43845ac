#include "chain/wallet.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <toml++/toml.h>

#include "base/settings.h"

namespace gpugrid::chain {

namespace {

std::string errno_text() { return std::strerror(errno); }

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string utc_stamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

std::string wallet_key_path(const std::string& data_dir) { return data_dir + "/wallet.key"; }

expected<secret_key> load_wallet_key(const std::string& path) {
  fd_closer f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (f.fd < 0) return io_error("cannot open wallet key file '{}': {}", path, errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return io_error("cannot stat wallet key file '{}': {}", path, errno_text());
  if (!S_ISREG(st.st_mode)) return invalid_input("wallet key file '{}' is not a regular file", path);
  if ((st.st_mode & 077) != 0)
    return invalid_input("wallet key file '{}' has permissions {:04o}: group and others must have no access "
                         "(run: chmod 600 '{}')",
                         path, st.st_mode & 07777, path);
  if (st.st_size != 65)
    return invalid_input("wallet key file '{}' has {} bytes; it holds 64 hex digits and a newline", path,
                         static_cast<int64_t>(st.st_size));
  char text[65];
  size_t got = 0;
  while (got < sizeof text) {
    ssize_t r = ::read(f.fd, text + got, sizeof text - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return io_error("cannot read wallet key file '{}': {}", path, r < 0 ? errno_text() : "short read");
    got += static_cast<size_t>(r);
  }
  std::string what = "wallet key file '" + path + "'";
  if (text[64] != '\n') return invalid_input("{}: does not end with a newline after 64 hex digits", what);
  auto raw = from_hex(std::string_view(text, 64), what);
  sodium_memzero(text, sizeof text);
  if (!raw) return invalid_input("{}: not 64 hex digits", what);
  auto key = secret_key::from_bytes(raw->data(), raw->size(), what);
  sodium_memzero(raw->data(), raw->size());
  return key;
}

status save_wallet_key(const secret_key& key, const std::string& path, bool replace) {
  struct stat st {};
  if (!replace && ::lstat(path.c_str(), &st) == 0) return io_error("wallet key file '{}' already exists", path);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  fd_closer f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f.fd < 0) return io_error("cannot create '{}': {}", tmp, errno_text());
  std::string text = to_hex(key.raw(), false) + "\n";
  status s;
  size_t done = 0;
  while (s.is_ok() && done < text.size()) {
    ssize_t w = ::write(f.fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) s = io_error("cannot write '{}': {}", tmp, errno_text());
    else done += static_cast<size_t>(w);
  }
  sodium_memzero(text.data(), text.size());
  if (s.is_ok() && ::fchmod(f.fd, 0600) != 0) s = io_error("cannot chmod '{}': {}", tmp, errno_text());
  if (s.is_ok() && ::fsync(f.fd) != 0) s = io_error("cannot fsync '{}': {}", tmp, errno_text());
  ::close(f.fd);
  f.fd = -1;
  if (s.is_ok() && !replace && ::link(tmp.c_str(), path.c_str()) != 0)
    s = io_error("cannot create wallet key file '{}': {}", path, errno_text());
  else if (s.is_ok() && replace && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = io_error("cannot replace wallet key file '{}': {}", path, errno_text());
  ::unlink(tmp.c_str());
  if (s.is_ok()) {
    int d = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      (void)::fsync(d);
      ::close(d);
    }
  }
  return s;
}

expected<secret_key> load_or_create_wallet_key(const std::string& data_dir, bool* created) {
  if (created) *created = false;
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  std::string path = wallet_key_path(data_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return load_wallet_key(path);
  secret_key k = secret_key::generate();
  status s = save_wallet_key(k, path);
  if (!s.is_ok()) {
    if (::lstat(path.c_str(), &st) == 0) return load_wallet_key(path);  // another process made it first
    return s;
  }
  if (created) *created = true;
  return k;
}

expected<secret_key> rotate_wallet_key(const std::string& data_dir, std::string* old_path) {
  if (old_path) old_path->clear();
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  std::string path = wallet_key_path(data_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    std::string keep = path + ".old-" + utc_stamp();
    if (::link(path.c_str(), keep.c_str()) != 0)
      return io_error("cannot keep the old wallet key as '{}': {}", keep, errno_text());
    if (old_path) *old_path = keep;
  }
  secret_key k = secret_key::generate();
  GG_RETURN_IF_ERROR(save_wallet_key(k, path, /*replace=*/true));
  return k;
}

expected<chain_settings> load_chain_settings(const std::string& data_dir) {
  chain_settings c;
  std::string path = data_dir + "/chain.toml";
  struct stat st {};
  if (!data_dir.empty() && ::stat(path.c_str(), &st) == 0) {
    c.source = path;
    toml::table t;
    try {
      t = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      return invalid_input("{}:{}: {}", path, e.source().begin.line, std::string(e.description()));
    }
    for (const auto& [k, v] : t) {
      std::string key(k.str());
      std::string where = path + ": " + key;
      if (key == "rpc" || key == "contract") {
        if (!v.is_string()) return invalid_input("{}: must be a string", where);
        std::string s = *v.value<std::string>();
        if (key == "rpc") c.rpc = s;
        else {
          GG_ASSIGN_OR_RETURN(address a, parse_address(s, where));
          c.contract = a;
        }
      } else if (key == "from_block") {
        auto n = v.value<int64_t>();
        if (!v.is_integer() || !n || *n < 0) return invalid_input("{}: must be a whole number", where);
        c.from_block = u256(*n);
      } else if (key == "chain_id" || key == "max_fee_gwei" || key == "confirmations") {
        auto n = v.value<int64_t>();
        if (!v.is_integer() || !n || *n < 0 || (key != "confirmations" && *n == 0) || (key == "confirmations" && *n > 1000))
          return invalid_input("{}: must be a positive whole number", where);
        if (key == "chain_id") c.chain_id = u256(*n);
        else if (key == "max_fee_gwei") c.max_fee_gwei = u256(*n);
        else c.confirmations = static_cast<unsigned>(*n);
      } else {
        return invalid_input("{}: unknown key (expected rpc, contract, chain_id, max_fee_gwei, confirmations, from_block)", where);
      }
    }
  }
  if (const char* e = std::getenv("GPUGRID_CHAIN_RPC"); e && *e) c.rpc = e;
  if (const char* e = std::getenv("GPUGRID_CHAIN_CONTRACT"); e && *e) {
    GG_ASSIGN_OR_RETURN(address a, parse_address(e, "GPUGRID_CHAIN_CONTRACT"));
    c.contract = a;
  }
  if (const char* e = std::getenv("GPUGRID_CHAIN_ID"); e && *e) {
    GG_ASSIGN_OR_RETURN(u256 id, parse_uint(e, "GPUGRID_CHAIN_ID"));
    c.chain_id = id;
  }
  return c;
}

}  // namespace gpugrid::chain
