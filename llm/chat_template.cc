#include "llm/chat_template.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "llm/text.h"

namespace gpugrid::llm {

namespace {

// Parse and render failures travel as this exception inside this file only; the public
// functions turn it into a status.
struct template_error {
  std::string what;
};
[[noreturn]] void fail(std::string what) { throw template_error{std::move(what)}; }

// ---------------------------------------------------------------------------------------------
// Values

struct value;
using array_t = std::vector<value>;
using object_t = std::vector<std::pair<std::string, value>>;  // insertion-ordered, as Python dicts
using kwargs_t = std::vector<std::pair<std::string, value>>;
using func_t = std::function<value(std::vector<value>&, kwargs_t&)>;

struct value {
  enum class kind { undefined, none, boolean, integer, number, string, array, object, function };
  kind k = kind::undefined;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;
  std::shared_ptr<array_t> a;
  std::shared_ptr<object_t> o;
  std::shared_ptr<func_t> f;
  bool is_namespace = false;
  std::string undefined_name;  // what was looked up, for error messages

  static value undefined(std::string name = {}) {
    value v;
    v.undefined_name = std::move(name);
    return v;
  }
  static value none() { value v; v.k = kind::none; return v; }
  static value boolean(bool x) { value v; v.k = kind::boolean; v.b = x; return v; }
  static value integer(int64_t x) { value v; v.k = kind::integer; v.i = x; return v; }
  static value number(double x) { value v; v.k = kind::number; v.d = x; return v; }
  static value string(std::string x) { value v; v.k = kind::string; v.s = std::move(x); return v; }
  static value array(array_t x = {}) { value v; v.k = kind::array; v.a = std::make_shared<array_t>(std::move(x)); return v; }
  static value object(object_t x = {}) { value v; v.k = kind::object; v.o = std::make_shared<object_t>(std::move(x)); return v; }
  static value function(func_t fn) { value v; v.k = kind::function; v.f = std::make_shared<func_t>(std::move(fn)); return v; }

  bool is_undefined() const { return k == kind::undefined; }
  bool is_none() const { return k == kind::none; }
  bool is_string() const { return k == kind::string; }
  bool is_array() const { return k == kind::array; }
  bool is_object() const { return k == kind::object; }
  bool is_numeric() const { return k == kind::integer || k == kind::number || k == kind::boolean; }
  double as_double() const { return k == kind::number ? d : k == kind::boolean ? (b ? 1 : 0) : static_cast<double>(i); }
  int64_t as_int() const { return k == kind::number ? static_cast<int64_t>(d) : k == kind::boolean ? (b ? 1 : 0) : i; }

  const value* find(const std::string& key) const {
    if (!o) return nullptr;
    for (auto& [kk, vv] : *o)
      if (kk == key) return &vv;
    return nullptr;
  }
  void put(const std::string& key, value v) {
    for (auto& [kk, vv] : *o)
      if (kk == key) {
        vv = std::move(v);
        return;
      }
    o->emplace_back(key, std::move(v));
  }
};

const char* type_name(const value& v) {
  switch (v.k) {
    case value::kind::undefined: return "undefined";
    case value::kind::none: return "none";
    case value::kind::boolean: return "boolean";
    case value::kind::integer: return "integer";
    case value::kind::number: return "float";
    case value::kind::string: return "string";
    case value::kind::array: return "list";
    case value::kind::object: return v.is_namespace ? "namespace" : "dict";
    case value::kind::function: return "function";
  }
  return "?";
}

bool truthy(const value& v) {
  switch (v.k) {
    case value::kind::undefined:
    case value::kind::none: return false;
    case value::kind::boolean: return v.b;
    case value::kind::integer: return v.i != 0;
    case value::kind::number: return v.d != 0;
    case value::kind::string: return !v.s.empty();
    case value::kind::array: return !v.a->empty();
    case value::kind::object: return !v.o->empty() || v.is_namespace;
    case value::kind::function: return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string py_str_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(q)) out += std::string("\\") + q;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out + q;
}

std::string to_str(const value& v, bool repr = false) {
  switch (v.k) {
    case value::kind::undefined: return "";
    case value::kind::none: return "None";
    case value::kind::boolean: return v.b ? "True" : "False";
    case value::kind::integer: return std::to_string(v.i);
    case value::kind::number: return float_repr(v.d);
    case value::kind::string: return repr ? py_str_repr(v.s) : v.s;
    case value::kind::array: {
      std::string out = "[";
      for (size_t n = 0; n < v.a->size(); ++n) out += (n ? ", " : "") + to_str((*v.a)[n], true);
      return out + "]";
    }
    case value::kind::object: {
      if (v.is_namespace) return "<Namespace>";
      std::string out = "{";
      size_t n = 0;
      for (auto& [k, x] : *v.o) out += (n++ ? ", " : "") + py_str_repr(k) + ": " + to_str(x, true);
      return out + "}";
    }
    case value::kind::function: return "<function>";
  }
  return "";
}

std::string json_escape(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// Python's json.dumps(ensure_ascii=False) with its default separators.
void to_json(const value& v, std::string& out, int indent, int depth) {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.k) {
    case value::kind::undefined: fail("tojson: value is undefined");
    case value::kind::none: out += "null"; return;
    case value::kind::boolean: out += v.b ? "true" : "false"; return;
    case value::kind::integer: out += std::to_string(v.i); return;
    case value::kind::number:
      out += std::isnan(v.d) ? "NaN" : std::isinf(v.d) ? (v.d > 0 ? "Infinity" : "-Infinity") : float_repr(v.d);
      return;
    case value::kind::string: out += json_escape(v.s); return;
    case value::kind::array:
      if (v.a->empty()) { out += "[]"; return; }
      out += '[';
      for (size_t n = 0; n < v.a->size(); ++n) {
        if (n) out += item_sep;
        newline(depth + 1);
        to_json((*v.a)[n], out, indent, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    case value::kind::object:
      if (v.o->empty()) { out += "{}"; return; }
      out += '{';
      for (size_t n = 0; n < v.o->size(); ++n) {
        if (n) out += item_sep;
        newline(depth + 1);
        out += json_escape((*v.o)[n].first) + ": ";
        to_json((*v.o)[n].second, out, indent, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    case value::kind::function: fail("tojson: cannot serialize a function");
  }
}

value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return value::none();
    case nlohmann::ordered_json::value_t::boolean: return value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned: return value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return value::number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      array_t a;
      for (auto& x : j) a.push_back(from_json(x));
      return value::array(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      object_t o;
      for (auto& [k, x] : j.items()) o.emplace_back(k, from_json(x));
      return value::object(std::move(o));
    }
    default: return value::none();
  }
}

bool equal(const value& x, const value& y) {
  if (x.is_numeric() && y.is_numeric()) {
    if (x.k == value::kind::number || y.k == value::kind::number) return x.as_double() == y.as_double();
    return x.as_int() == y.as_int();
  }
  if (x.k != y.k) return false;
  switch (x.k) {
    case value::kind::undefined:
    case value::kind::none: return true;
    case value::kind::string: return x.s == y.s;
    case value::kind::array:
      if (x.a->size() != y.a->size()) return false;
      for (size_t n = 0; n < x.a->size(); ++n)
        if (!equal((*x.a)[n], (*y.a)[n])) return false;
      return true;
    case value::kind::object:
      if (x.o->size() != y.o->size()) return false;
      for (auto& [k, v] : *x.o) {
        const value* other = y.find(k);
        if (!other || !equal(v, *other)) return false;
      }
      return true;
    case value::kind::function: return x.f == y.f;
    default: return false;
  }
}

int compare(const value& x, const value& y) {
  if (x.is_numeric() && y.is_numeric()) {
    double a = x.as_double(), b = y.as_double();
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (x.is_string() && y.is_string()) return x.s < y.s ? -1 : x.s > y.s ? 1 : 0;
  if (x.is_array() && y.is_array()) {
    for (size_t n = 0; n < std::min(x.a->size(), y.a->size()); ++n)
      if (int c = compare((*x.a)[n], (*y.a)[n])) return c;
    return x.a->size() < y.a->size() ? -1 : x.a->size() > y.a->size() ? 1 : 0;
  }
  fail(fmt::format("cannot compare {} with {}", type_name(x), type_name(y)));
}

size_t char_count(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::vector<std::string> chars_of(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_char_length(s, i);
    if (!n) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Items a for loop or a filter iterates over: list elements, dict keys, string characters.
array_t iterate(const value& v, const char* what) {
  switch (v.k) {
    case value::kind::undefined: return {};
    case value::kind::array: return *v.a;
    case value::kind::object: {
      array_t keys;
      for (auto& kv : *v.o) keys.push_back(value::string(kv.first));
      return keys;
    }
    case value::kind::string: {
      array_t out;
      for (auto& c : chars_of(v.s)) out.push_back(value::string(c));
      return out;
    }
    default: fail(fmt::format("{}: {} is not iterable", what, type_name(v)));
  }
}

bool contains(const value& container, const value& item) {
  switch (container.k) {
    case value::kind::string:
      if (!item.is_string()) fail(fmt::format("'in <string>' needs a string, not {}", type_name(item)));
      return container.s.find(item.s) != std::string::npos;
    case value::kind::array:
      for (auto& x : *container.a)
        if (equal(x, item)) return true;
      return false;
    case value::kind::object: return item.is_string() && container.find(item.s) != nullptr;
    case value::kind::undefined: fail("'in' on an undefined value");
    default: fail(fmt::format("'in' needs a container, not {}", type_name(container)));
  }
}

bool is_space_char(uint32_t cp) { return is_unicode_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }

std::string py_strip(const std::string& s, bool left, bool right, const value* chars) {
  auto cs = chars_of(s);
  std::unordered_set<std::string> set;
  if (chars && chars->is_string())
    for (auto& c : chars_of(chars->s)) set.insert(c);
  auto strip_this = [&](const std::string& c) {
    if (chars && chars->is_string()) return set.count(c) > 0;
    size_t n;
    return is_space_char(decode_utf8(c, 0, &n));
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip_this(cs[b])) ++b;
  if (right)
    while (e > b && strip_this(cs[e - 1])) --e;
  std::string out;
  for (size_t n = b; n < e; ++n) out += cs[n];
  return out;
}

std::string py_title(const std::string& s, bool capitalize_only) {
  std::string out;
  bool prev_cased = false;
  bool first = true;
  for (auto& c : chars_of(s)) {
    bool letter = c.size() > 1 || std::isalpha(static_cast<unsigned char>(c[0]));
    if (capitalize_only) out += first ? unicode_upper(c) : unicode_lower(c);
    else out += letter ? (prev_cased ? unicode_lower(c) : unicode_upper(c)) : c;
    prev_cased = letter;
    first = false;
  }
  return out;
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between characters.
    auto cs = chars_of(s);
    int64_t done = 0;
    for (size_t n = 0; n <= cs.size(); ++n) {
      if (count < 0 || done < count) out += to, ++done;
      if (n < cs.size()) out += cs[n];
    }
    return out;
  }
  size_t last = 0;
  int64_t done = 0;
  for (size_t pos; (count < 0 || done < count) && (pos = s.find(from, last)) != std::string::npos; ++done) {
    out.append(s, last, pos - last);
    out += to;
    last = pos + from.size();
  }
  out.append(s, last, std::string::npos);
  return out;
}

value arg(std::vector<value>& args, kwargs_t& kwargs, size_t pos, const char* name, value dflt = value::undefined()) {
  if (pos < args.size()) return args[pos];
  for (auto& [k, v] : kwargs)
    if (k == name) return v;
  return dflt;
}

int64_t norm_index(int64_t i, size_t n) { return i < 0 ? i + static_cast<int64_t>(n) : i; }

// ---------------------------------------------------------------------------------------------
// Lexer

enum class tok { text, var_begin, var_end, block_begin, block_end, name, str, integer, number, op, eof };

struct token {
  tok type;
  std::string s;
  int line;
};

std::vector<token> lex(std::string_view src) {
  std::vector<token> out;
  size_t i = 0;
  int line = 1;
  std::string pending_text;
  bool strip_next_ws = false, trim_next_newline = false;
  auto count_lines = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) line += src[k] == '\n';
  };
  auto flush_text = [&](int at_line) {
    if (!pending_text.empty()) out.push_back({tok::text, pending_text, at_line});
    pending_text.clear();
  };
  while (i < src.size()) {
    size_t open = std::string_view::npos;
    for (size_t k = i; k + 1 < src.size(); ++k)
      if (src[k] == '{' && (src[k + 1] == '{' || src[k + 1] == '%' || src[k + 1] == '#')) {
        open = k;
        break;
      }
    std::string text(src.substr(i, open == std::string_view::npos ? std::string_view::npos : open - i));
    int text_line = line;
    count_lines(i, open == std::string_view::npos ? src.size() : open);
    bool newline_trimmed = false;
    if (strip_next_ws) {
      size_t b = 0;
      while (b < text.size() && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
      text.erase(0, b);
    } else if (trim_next_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
      newline_trimmed = true;
    } else if (trim_next_newline && text.size() >= 2 && text[0] == '\r' && text[1] == '\n') {
      text.erase(0, 2);
      newline_trimmed = true;
    }
    strip_next_ws = trim_next_newline = false;
    if (open == std::string_view::npos) {
      pending_text += text;
      break;
    }
    char kind = src[open + 1];
    size_t body = open + 2;
    bool minus = body < src.size() && src[body] == '-';
    bool plus = body < src.size() && src[body] == '+';
    if (minus) {
      size_t e = text.size();
      while (e > 0 && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
      text.erase(e);
    } else if (kind != '{' && !plus) {
      // lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag.
      size_t e = text.size();
      while (e > 0 && (text[e - 1] == ' ' || text[e - 1] == '\t')) --e;
      bool line_start = e > 0 ? text[e - 1] == '\n' : (i == 0 || newline_trimmed);
      if (line_start) text.erase(e);
    }
    pending_text += text;
    if (minus || plus) ++body;
    if (kind == '#') {
      size_t close = src.find("#}", body);
      if (close == std::string_view::npos) fail(fmt::format("line {}: unclosed comment", line));
      bool cminus = close > body && src[close - 1] == '-';
      count_lines(open, close + 2);
      i = close + 2;
      if (cminus) strip_next_ws = true;
      else trim_next_newline = true;
      continue;
    }
    flush_text(text_line);
    out.push_back({kind == '{' ? tok::var_begin : tok::block_begin, "", line});
    // Tokens up to the closing delimiter.
    const char close_ch = kind == '{' ? '}' : '%';
    size_t k = body;
    int depth = 0;
    bool closed = false;
    while (k < src.size()) {
      char c = src[k];
      if (c == '\n') ++line;
      if (std::isspace(static_cast<unsigned char>(c))) {
        ++k;
        continue;
      }
      if (depth == 0 && c == '-' && k + 2 < src.size() + 1 && k + 2 <= src.size() && src[k + 1] == close_ch &&
          k + 2 < src.size() && src[k + 2] == '}') {
        strip_next_ws = true;
        k += 3;
        closed = true;
        break;
      }
      if (depth == 0 && c == close_ch && k + 1 < src.size() && src[k + 1] == '}') {
        if (kind == '%') trim_next_newline = true;
        k += 2;
        closed = true;
        break;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = k;
        while (e < src.size() && (std::isalnum(static_cast<unsigned char>(src[e])) || src[e] == '_')) ++e;
        out.push_back({tok::name, std::string(src.substr(k, e - k)), line});
        k = e;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = k;
        bool is_float = false;
        while (e < src.size() && (std::isdigit(static_cast<unsigned char>(src[e])) || src[e] == '_')) ++e;
        if (e + 1 < src.size() && src[e] == '.' && std::isdigit(static_cast<unsigned char>(src[e + 1]))) {
          is_float = true;
          ++e;
          while (e < src.size() && std::isdigit(static_cast<unsigned char>(src[e]))) ++e;
        }
        std::string num(src.substr(k, e - k));
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        out.push_back({is_float ? tok::number : tok::integer, num, line});
        k = e;
        continue;
      }
      if (c == '\'' || c == '"') {
        std::string s;
        size_t e = k + 1;
        for (; e < src.size() && src[e] != c; ++e) {
          if (src[e] == '\n') ++line;
          if (src[e] == '\\' && e + 1 < src.size()) {
            char n = src[++e];
            switch (n) {
              case 'n': s += '\n'; break;
              case 't': s += '\t'; break;
              case 'r': s += '\r'; break;
              case '\\': s += '\\'; break;
              case '\'': s += '\''; break;
              case '"': s += '"'; break;
              case '0': s += '\0'; break;
              case 'u': {
                if (e + 4 >= src.size()) fail(fmt::format("line {}: bad \\u escape", line));
                append_utf8(s, static_cast<uint32_t>(std::stoul(std::string(src.substr(e + 1, 4)), nullptr, 16)));
                e += 4;
                break;
              }
              default: s += '\\'; s += n;
            }
          } else {
            s += src[e];
          }
        }
        if (e >= src.size()) fail(fmt::format("line {}: unterminated string", line));
        out.push_back({tok::str, s, line});
        k = e + 1;
        continue;
      }
      static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
                                  "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
      bool matched = false;
      for (const char* op : ops) {
        size_t n = std::char_traits<char>::length(op);
        if (src.compare(k, n, op) == 0) {
          if (op[0] == '(' || op[0] == '[' || op[0] == '{') ++depth;
          if ((op[0] == ')' || op[0] == ']' || op[0] == '}') && depth > 0) --depth;
          out.push_back({tok::op, op, line});
          k += n;
          matched = true;
          break;
        }
      }
      if (!matched) fail(fmt::format("line {}: unexpected character '{}'", line, c));
    }
    if (!closed) fail(fmt::format("line {}: unclosed {} tag", line, kind == '{' ? "{{" : "{%"));
    out.push_back({kind == '{' ? tok::var_end : tok::block_end, "", line});
    i = k;
  }
  flush_text(line);
  out.push_back({tok::eof, "", line});
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Syntax tree

struct expr;
using expr_ptr = std::shared_ptr<const expr>;

struct expr {
  enum class kind {
    literal, name, attr, item, slice, call, filter, test, neg, pos, not_, and_, or_, binary, cond, list, dict,
  };
  kind k;
  int line = 0;
  value lit;
  std::string name;  // variable, attribute, filter, test or operator
  std::vector<expr_ptr> kids;
  std::vector<std::pair<std::string, expr_ptr>> kwargs;
  bool negated = false;
};

struct template_node {
  enum class kind { text, output, if_, for_, set, set_block, break_, continue_, body, macro };
  kind k;
  int line = 0;
  std::string text;
  expr_ptr e;                                          // output value, for iterable, set value
  std::vector<std::pair<expr_ptr, std::vector<std::shared_ptr<const template_node>>>> branches;  // if
  std::vector<std::shared_ptr<const template_node>> body, else_body;
  std::vector<std::string> targets;  // for / set names; set "ns.attr" keeps {ns, attr} in targets with attr_set
  bool attr_set = false;
  expr_ptr loop_filter;
  std::string macro_name;
  std::vector<expr_ptr> defaults;  // per macro parameter (targets); null when it has none
};

namespace {

using node_ptr = std::shared_ptr<const template_node>;
using node_list = std::vector<node_ptr>;

const std::unordered_set<std::string> kFilters = {
    "trim", "tojson", "length", "count", "upper", "lower", "title", "capitalize", "default", "d", "string", "int",
    "float", "join", "first", "last", "list", "reverse", "replace", "items", "selectattr", "rejectattr", "map",
    "safe", "abs", "round", "unique", "sort", "e", "escape", "select", "reject"};
const std::unordered_set<std::string> kTests = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "mapping", "iterable",
    "sequence", "true", "false", "even", "odd", "divisibleby", "eq", "equalto", "ne", "in", "lt", "gt", "le",
    "ge", "callable", "lower", "upper"};

// Nesting deeper than this (parentheses, unary operators, blocks) is refused rather than
// recursed into, so that a hostile template cannot exhaust the stack.
constexpr int kMaxDepth = 200;

class parser {
 public:
  explicit parser(std::vector<token> toks) : t_(std::move(toks)) {}

  node_list parse_template() {
    std::string stop;
    node_list body = parse_body({}, &stop);
    return body;
  }

 private:
  const token& cur() const { return t_[p_]; }
  const token& peek(size_t n = 1) const { return t_[std::min(p_ + n, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == tok::op && cur().s == op; }
  bool is_name(const char* n) const { return cur().type == tok::name && cur().s == n; }
  [[noreturn]] void error(const std::string& what) const { fail(fmt::format("line {}: {}", cur().line, what)); }
  void expect_op(const char* op) {
    if (!is_op(op)) error(fmt::format("expected '{}'", op));
    ++p_;
  }
  std::string expect_name() {
    if (cur().type != tok::name) error("expected a name");
    return t_[p_++].s;
  }
  void expect_block_end() {
    if (cur().type != tok::block_end) error(fmt::format("unexpected '{}' in a statement", cur().s));
    ++p_;
  }

  // Parses nodes until a {% name %} with name in `stops` (left unconsumed after block_begin+name
  // is read into *stop) or the end.
  node_list parse_body(const std::unordered_set<std::string>& stops, std::string* stop) {
    node_list out;
    while (true) {
      const token& tk = cur();
      if (tk.type == tok::eof) {
        if (!stops.empty()) error(fmt::format("missing {{% {} %}}", *stops.begin()));
        return out;
      }
      if (tk.type == tok::text) {
        auto n = std::make_shared<template_node>();
        n->k = template_node::kind::text;
        n->text = tk.s;
        out.push_back(n);
        ++p_;
        continue;
      }
      if (tk.type == tok::var_begin) {
        ++p_;
        auto n = std::make_shared<template_node>();
        n->k = template_node::kind::output;
        n->line = tk.line;
        n->e = parse_expr();
        if (cur().type != tok::var_end) error(fmt::format("unexpected '{}' in an expression", cur().s));
        ++p_;
        out.push_back(n);
        continue;
      }
      if (tk.type != tok::block_begin) error("unexpected token");
      ++p_;
      std::string kw = expect_name();
      if (stops.count(kw)) {
        *stop = kw;
        return out;
      }
      out.push_back(parse_statement(kw, tk.line));
    }
  }

  node_ptr parse_statement(const std::string& kw, int line) {
    depth_guard guard(*this);
    auto n = std::make_shared<template_node>();
    n->line = line;
    std::string stop;
    if (kw == "if") {
      n->k = template_node::kind::if_;
      expr_ptr c = parse_expr();
      expect_block_end();
      while (true) {
        node_list body = parse_body({"elif", "else", "endif"}, &stop);
        n->branches.push_back({c, body});
        if (stop == "elif") {
          c = parse_expr();
          expect_block_end();
          continue;
        }
        if (stop == "else") {
          expect_block_end();
          n->else_body = parse_body({"endif"}, &stop);
        }
        expect_block_end();
        return n;
      }
    }
    if (kw == "for") {
      n->k = template_node::kind::for_;
      n->targets.push_back(expect_name());
      while (is_op(",")) {
        ++p_;
        n->targets.push_back(expect_name());
      }
      if (!is_name("in")) error("expected 'in' in a for loop");
      ++p_;
      n->e = parse_ternary(false);
      if (is_name("if")) {
        ++p_;
        n->loop_filter = parse_or();
      }
      if (is_name("recursive")) error("unsupported: recursive for loops");
      expect_block_end();
      n->body = parse_body({"else", "endfor"}, &stop);
      if (stop == "else") {
        expect_block_end();
        n->else_body = parse_body({"endfor"}, &stop);
      }
      expect_block_end();
      return n;
    }
    if (kw == "set") {
      std::string first = expect_name();
      if (is_op(".")) {
        ++p_;
        n->attr_set = true;
        n->targets = {first, expect_name()};
      } else {
        n->targets.push_back(first);
        while (is_op(",")) {
          ++p_;
          n->targets.push_back(expect_name());
        }
      }
      if (is_op("=")) {
        ++p_;
        n->k = template_node::kind::set;
        n->e = parse_expr();
        expect_block_end();
        return n;
      }
      if (n->attr_set || n->targets.size() != 1) error("a block set takes one plain name");
      n->k = template_node::kind::set_block;
      expect_block_end();
      n->body = parse_body({"endset"}, &stop);
      expect_block_end();
      return n;
    }
    if (kw == "macro") {
      n->k = template_node::kind::macro;
      n->macro_name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        n->targets.push_back(expect_name());
        expr_ptr dflt;
        if (is_op("=")) {
          ++p_;
          dflt = parse_ternary(true);
        }
        n->defaults.push_back(dflt);
        if (!is_op(",")) break;
        ++p_;
      }
      expect_op(")");
      expect_block_end();
      n->body = parse_body({"endmacro"}, &stop);
      expect_block_end();
      return n;
    }
    if (kw == "break" || kw == "continue") {
      n->k = kw == "break" ? template_node::kind::break_ : template_node::kind::continue_;
      expect_block_end();
      return n;
    }
    error(fmt::format("unsupported statement '{}'", kw));
  }

  // expr := ternary (tuples without parentheses are lists)
  expr_ptr parse_expr() {
    expr_ptr e = parse_ternary(true);
    if (is_op(",") && (peek().type != tok::var_end && peek().type != tok::block_end)) {
      auto l = make(expr::kind::list);
      l->kids.push_back(e);
      while (is_op(",")) {
        ++p_;
        if (cur().type == tok::var_end || cur().type == tok::block_end) break;
        l->kids.push_back(parse_ternary(true));
      }
      return l;
    }
    return e;
  }

  std::shared_ptr<expr> make(expr::kind k) {
    auto e = std::make_shared<expr>();
    e->k = k;
    e->line = cur().line;
    return e;
  }

  expr_ptr parse_ternary(bool allow_cond) {
    depth_guard guard(*this);
    expr_ptr e = parse_or();
    if (allow_cond && is_name("if")) {
      ++p_;
      auto c = make(expr::kind::cond);
      expr_ptr test = parse_or();
      expr_ptr other;
      if (is_name("else")) {
        ++p_;
        other = parse_ternary(true);
      } else {
        auto u = make(expr::kind::literal);
        other = u;
      }
      c->kids = {test, e, other};
      return c;
    }
    return e;
  }

  expr_ptr parse_or() {
    expr_ptr e = parse_and();
    while (is_name("or")) {
      ++p_;
      auto n = make(expr::kind::or_);
      n->kids = {e, parse_and()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_and() {
    expr_ptr e = parse_not();
    while (is_name("and")) {
      ++p_;
      auto n = make(expr::kind::and_);
      n->kids = {e, parse_not()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_not() {
    depth_guard guard(*this);
    if (is_name("not")) {
      ++p_;
      auto n = make(expr::kind::not_);
      n->kids = {parse_not()};
      return n;
    }
    return parse_compare();
  }
  expr_ptr parse_compare() {
    expr_ptr e = parse_math1();
    while (true) {
      std::string op;
      if (cur().type == tok::op && (cur().s == "==" || cur().s == "!=" || cur().s == "<" || cur().s == ">" ||
                                    cur().s == "<=" || cur().s == ">=")) {
        op = cur().s;
        ++p_;
      } else if (is_name("in")) {
        op = "in";
        ++p_;
      } else if (is_name("not") && peek().type == tok::name && peek().s == "in") {
        op = "not in";
        p_ += 2;
      } else {
        return e;
      }
      auto n = make(expr::kind::binary);
      n->name = op;
      n->kids = {e, parse_math1()};
      e = n;
    }
  }
  expr_ptr parse_math1() {
    expr_ptr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      auto n = make(expr::kind::binary);
      n->name = t_[p_++].s;
      n->kids = {e, parse_concat()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_concat() {
    expr_ptr e = parse_math2();
    while (is_op("~")) {
      ++p_;
      auto n = make(expr::kind::binary);
      n->name = "~";
      n->kids = {e, parse_math2()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_math2() {
    expr_ptr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      auto n = make(expr::kind::binary);
      n->name = t_[p_++].s;
      n->kids = {e, parse_pow()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_pow() {
    expr_ptr e = parse_unary();
    while (is_op("**")) {
      ++p_;
      auto n = make(expr::kind::binary);
      n->name = "**";
      n->kids = {e, parse_unary()};
      e = n;
    }
    return e;
  }
  expr_ptr parse_unary() {
    depth_guard guard(*this);
    if (is_op("-") || is_op("+")) {
      auto n = make(t_[p_].s == "-" ? expr::kind::neg : expr::kind::pos);
      ++p_;
      n->kids = {parse_unary()};
      return n;
    }
    expr_ptr e = parse_primary();
    e = parse_postfix(e);
    return parse_filters(e);
  }

  void parse_args(std::vector<expr_ptr>& args, std::vector<std::pair<std::string, expr_ptr>>& kwargs) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().type == tok::name && peek().type == tok::op && peek().s == "=") {
        std::string k = t_[p_].s;
        p_ += 2;
        kwargs.emplace_back(k, parse_ternary(true));
      } else {
        args.push_back(parse_ternary(true));
      }
      if (!is_op(",")) break;
      ++p_;
    }
    expect_op(")");
  }

  expr_ptr parse_postfix(expr_ptr e) {
    while (true) {
      if (is_op(".")) {
        ++p_;
        auto n = make(expr::kind::attr);
        if (cur().type == tok::integer) n->name = t_[p_++].s;
        else n->name = expect_name();
        n->kids = {e};
        e = n;
      } else if (is_op("[")) {
        ++p_;
        expr_ptr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expr();
          if (is_op(":") && k < 2) {
            is_slice = true;
            ++p_;
            continue;
          }
          break;
        }
        expect_op("]");
        if (is_slice) {
          auto n = make(expr::kind::slice);
          n->kids = {e, parts[0], parts[1], parts[2]};
          e = n;
        } else {
          if (!parts[0]) error("empty subscript");
          auto n = make(expr::kind::item);
          n->kids = {e, parts[0]};
          e = n;
        }
      } else if (is_op("(")) {
        auto n = make(expr::kind::call);
        n->kids = {e};
        std::vector<expr_ptr> args;
        parse_args(args, n->kwargs);
        n->kids.insert(n->kids.end(), args.begin(), args.end());
        e = n;
      } else {
        return e;
      }
    }
  }

  expr_ptr parse_filters(expr_ptr e) {
    while (true) {
      if (is_op("|")) {
        ++p_;
        auto n = make(expr::kind::filter);
        n->name = expect_name();
        if (!kFilters.count(n->name)) fail(fmt::format("line {}: unsupported filter '{}'", n->line, n->name));
        n->kids = {e};
        if (is_op("(")) {
          std::vector<expr_ptr> args;
          parse_args(args, n->kwargs);
          n->kids.insert(n->kids.end(), args.begin(), args.end());
        }
        e = n;
      } else if (is_name("is")) {
        ++p_;
        auto n = make(expr::kind::test);
        if (is_name("not")) {
          ++p_;
          n->negated = true;
        }
        if (is_op("==")) n->name = "eq", ++p_;
        else if (is_op("!=")) n->name = "ne", ++p_;
        else n->name = expect_name();
        if (!kTests.count(n->name)) fail(fmt::format("line {}: unsupported test '{}'", n->line, n->name));
        n->kids = {e};
        if (is_op("(")) {
          std::vector<expr_ptr> args;
          parse_args(args, n->kwargs);
          n->kids.insert(n->kids.end(), args.begin(), args.end());
        } else if (cur().type == tok::str || cur().type == tok::integer || cur().type == tok::number ||
                   (cur().type == tok::name && !is_name("and") && !is_name("or") && !is_name("else") &&
                    !is_name("if") && !is_name("is") && !is_name("in") && !is_name("not"))) {
          n->kids.push_back(parse_primary());
        }
        e = n;
      } else {
        return e;
      }
    }
  }

  expr_ptr parse_primary() {
    const token& tk = cur();
    if (tk.type == tok::str) {
      // Adjacent string literals concatenate.
      std::string s;
      while (cur().type == tok::str) s += t_[p_++].s;
      auto n = make(expr::kind::literal);
      n->lit = value::string(s);
      return n;
    }
    if (tk.type == tok::integer) {
      auto n = make(expr::kind::literal);
      n->lit = value::integer(std::stoll(tk.s));
      ++p_;
      return n;
    }
    if (tk.type == tok::number) {
      auto n = make(expr::kind::literal);
      n->lit = value::number(std::stod(tk.s));
      ++p_;
      return n;
    }
    if (tk.type == tok::name) {
      ++p_;
      auto n = make(expr::kind::literal);
      if (tk.s == "true" || tk.s == "True") n->lit = value::boolean(true);
      else if (tk.s == "false" || tk.s == "False") n->lit = value::boolean(false);
      else if (tk.s == "none" || tk.s == "None") n->lit = value::none();
      else {
        n->k = expr::kind::name;
        n->name = tk.s;
      }
      return n;
    }
    if (is_op("(")) {
      ++p_;
      if (is_op(")")) {
        ++p_;
        return make(expr::kind::list);
      }
      expr_ptr e = parse_expr();
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      ++p_;
      auto n = make(expr::kind::list);
      while (!is_op("]")) {
        n->kids.push_back(parse_ternary(true));
        if (!is_op(",")) break;
        ++p_;
      }
      expect_op("]");
      return n;
    }
    if (is_op("{")) {
      ++p_;
      auto n = make(expr::kind::dict);
      while (!is_op("}")) {
        n->kids.push_back(parse_ternary(true));
        expect_op(":");
        n->kids.push_back(parse_ternary(true));
        if (!is_op(",")) break;
        ++p_;
      }
      expect_op("}");
      return n;
    }
    error(fmt::format("unexpected '{}'", tk.s.empty() ? "end of tag" : tk.s));
  }

  struct depth_guard {
    explicit depth_guard(parser& p) : p_(p) {
      if (++p_.depth_ > kMaxDepth) p_.error(fmt::format("nesting deeper than {}", kMaxDepth));
    }
    ~depth_guard() { --p_.depth_; }
    parser& p_;
  };

  std::vector<token> t_;
  size_t p_ = 0;
  int depth_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Evaluation

enum class flow { normal, break_, continue_ };

class renderer {
 public:
  renderer(value globals, const render_limits& limits) : limits_(limits) { scopes_.push_back(std::move(globals)); }

  void render(const node_list& body, std::string& out) {
    if (render_list(body, out) != flow::normal) fail("break or continue outside a loop");
  }

 private:
  value lookup(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (const value* v = it->find(name)) return *v;
    return builtin(name);
  }

  value builtin(const std::string& name) {
    if (name == "raise_exception")
      return value::function([](std::vector<value>& a, kwargs_t&) -> value {
        fail(fmt::format("the template raised: {}", a.empty() ? std::string() : to_str(a[0])));
      });
    if (name == "namespace" || name == "dict")
      return value::function([ns = name == "namespace"](std::vector<value>& a, kwargs_t& kw) {
        value v = value::object();
        v.is_namespace = ns;
        if (!a.empty() && a[0].is_object())
          for (auto& [k, x] : *a[0].o) v.put(k, x);
        for (auto& [k, x] : kw) v.put(k, x);
        return v;
      });
    if (name == "range")
      return value::function([](std::vector<value>& a, kwargs_t&) {
        int64_t start = 0, stop = 0, step = 1;
        if (a.size() == 1) stop = a[0].as_int();
        else if (a.size() >= 2) start = a[0].as_int(), stop = a[1].as_int();
        if (a.size() >= 3) step = a[2].as_int();
        if (step == 0) fail("range() step must not be zero");
        array_t out;
        for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step) {
          if (out.size() >= 1000000) fail("range() is too long");
          out.push_back(value::integer(x));
        }
        return value::array(std::move(out));
      });
    if (name == "strftime_now")
      return value::function([](std::vector<value>& a, kwargs_t&) {
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[256];
        size_t n = std::strftime(buf, sizeof buf, a.empty() ? "" : to_str(a[0]).c_str(), &tm);
        return value::string(std::string(buf, n));
      });
    return value::undefined(name);
  }

  void assign(const std::string& name, value v) { scopes_.back().put(name, std::move(v)); }

  flow render_list(const node_list& body, std::string& out) {
    for (auto& n : body) {
      flow f = render_node(*n, out);
      if (f != flow::normal) return f;
    }
    return flow::normal;
  }

  flow render_node(const template_node& n, std::string& out) {
    count_step(n.line);
    if (out.size() > limits_.max_bytes) fail(fmt::format("line {}: the output exceeds {} bytes", n.line, limits_.max_bytes));
    switch (n.k) {
      case template_node::kind::text: out += n.text; return flow::normal;
      case template_node::kind::output: out += to_str(eval(*n.e)); return flow::normal;
      case template_node::kind::if_:
        for (auto& [c, body] : n.branches)
          if (truthy(eval(*c))) return render_list(body, out);
        return render_list(n.else_body, out);
      case template_node::kind::for_: return render_for(n, out);
      case template_node::kind::set: {
        value v = eval(*n.e);
        if (n.attr_set) {
          value ns = lookup(n.targets[0]);
          if (!ns.is_object() || !ns.is_namespace)
            fail(fmt::format("line {}: cannot set an attribute on '{}', which is not a namespace()", n.line, n.targets[0]));
          ns.put(n.targets[1], std::move(v));
        } else if (n.targets.size() == 1) {
          assign(n.targets[0], std::move(v));
        } else {
          array_t items = iterate(v, "set");
          if (items.size() != n.targets.size()) fail(fmt::format("line {}: cannot unpack {} values into {}", n.line, items.size(), n.targets.size()));
          for (size_t k = 0; k < items.size(); ++k) assign(n.targets[k], items[k]);
        }
        return flow::normal;
      }
      case template_node::kind::set_block: {
        std::string inner;
        if (render_list(n.body, inner) != flow::normal) fail("break or continue inside a set block");
        assign(n.targets[0], value::string(inner));
        return flow::normal;
      }
      case template_node::kind::break_: return flow::break_;
      case template_node::kind::continue_: return flow::continue_;
      case template_node::kind::body: return render_list(n.body, out);
      case template_node::kind::macro: assign(n.macro_name, make_macro(n)); return flow::normal;
    }
    return flow::normal;
  }

  // A macro sees the template's top-level variables and its parameters, not the caller's locals.
  value make_macro(const template_node& n) {
    return value::function([this, &n](std::vector<value>& args, kwargs_t& kw) {
      if (args.size() > n.targets.size())
        fail(fmt::format("line {}: macro '{}' takes {} arguments, got {}", n.line, n.macro_name, n.targets.size(), args.size()));
      if (++macro_depth_ > 64) fail(fmt::format("line {}: macro '{}' nests deeper than 64 calls", n.line, n.macro_name));
      value frame = value::object();
      for (size_t k = 0; k < n.targets.size(); ++k) {
        value v = k < args.size() ? args[k] : value::undefined(n.targets[k]);
        for (auto& [name, x] : kw)
          if (name == n.targets[k]) v = x;
        if (v.is_undefined() && n.defaults[k]) v = eval(*n.defaults[k]);
        frame.put(n.targets[k], v);
      }
      for (auto& [name, x] : kw)
        if (std::find(n.targets.begin(), n.targets.end(), name) == n.targets.end())
          fail(fmt::format("line {}: macro '{}' has no parameter '{}'", n.line, n.macro_name, name));
      std::vector<value> saved = {scopes_[0], frame};
      std::swap(saved, scopes_);
      std::string out;
      flow f = flow::normal;
      try {
        f = render_list(n.body, out);
      } catch (...) {
        std::swap(saved, scopes_);
        --macro_depth_;
        throw;
      }
      std::swap(saved, scopes_);
      --macro_depth_;
      if (f != flow::normal) fail(fmt::format("line {}: break or continue outside a loop in macro '{}'", n.line, n.macro_name));
      return value::string(out);
    });
  }

  flow render_for(const template_node& n, std::string& out) {
    value seq = eval(*n.e);
    if (seq.is_none()) fail(fmt::format("line {}: cannot loop over none", n.line));
    array_t items = iterate(seq, "for");
    auto bind = [&](const value& item) {
      if (n.targets.size() == 1) {
        assign(n.targets[0], item);
        return;
      }
      array_t parts = iterate(item, "for");
      if (parts.size() != n.targets.size())
        fail(fmt::format("line {}: cannot unpack {} values into {}", n.line, parts.size(), n.targets.size()));
      for (size_t k = 0; k < parts.size(); ++k) assign(n.targets[k], parts[k]);
    };
    if (n.loop_filter) {
      array_t kept;
      for (auto& item : items) {
        scopes_.push_back(value::object());
        bind(item);
        bool keep = truthy(eval(*n.loop_filter));
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return render_list(n.else_body, out);
    const size_t len = items.size();
    for (size_t idx = 0; idx < len; ++idx) {
      count_step(n.line);
      scopes_.push_back(value::object());
      object_t loop;
      loop.reserve(9);
      loop.emplace_back("index", value::integer(static_cast<int64_t>(idx + 1)));
      loop.emplace_back("index0", value::integer(static_cast<int64_t>(idx)));
      loop.emplace_back("revindex", value::integer(static_cast<int64_t>(len - idx)));
      loop.emplace_back("revindex0", value::integer(static_cast<int64_t>(len - idx - 1)));
      loop.emplace_back("first", value::boolean(idx == 0));
      loop.emplace_back("last", value::boolean(idx + 1 == len));
      loop.emplace_back("length", value::integer(static_cast<int64_t>(len)));
      loop.emplace_back("previtem", idx > 0 ? items[idx - 1] : value::undefined("loop.previtem"));
      loop.emplace_back("nextitem", idx + 1 < len ? items[idx + 1] : value::undefined("loop.nextitem"));
      scopes_.back().o->emplace_back("loop", value::object(std::move(loop)));
      bind(items[idx]);
      flow f = render_list(n.body, out);
      scopes_.pop_back();
      if (f == flow::break_) break;
    }
    return flow::normal;
  }

  [[noreturn]] void undefined_error(const value& v, int line, const std::string& what) {
    fail(fmt::format("line {}: '{}' is undefined{}", line, v.undefined_name.empty() ? "value" : v.undefined_name, what));
  }

  value get_attr(const value& obj, const std::string& name, int line) {
    switch (obj.k) {
      case value::kind::undefined: undefined_error(obj, line, fmt::format(" (reading .{})", name));
      case value::kind::object:
        if (!obj.is_namespace && (name == "items" || name == "keys" || name == "values" || name == "get"))
          return method(obj, name);
        if (const value* v = obj.find(name)) return *v;
        return value::undefined(name);
      case value::kind::string: {
        static const std::unordered_set<std::string> m = {"strip", "lstrip", "rstrip", "split", "startswith",
                                                          "endswith", "upper", "lower", "title", "capitalize",
                                                          "replace", "join", "count", "find"};
        if (m.count(name)) return method(obj, name);
        return value::undefined(name);
      }
      default: return value::undefined(name);
    }
  }

  value method(const value& self, const std::string& name) {
    return value::function([self, name](std::vector<value>& a, kwargs_t& kw) -> value {
      if (self.is_object()) {
        if (name == "items") {
          array_t out;
          for (auto& [k, v] : *self.o) out.push_back(value::array({value::string(k), v}));
          return value::array(std::move(out));
        }
        if (name == "keys") return value::array(iterate(self, "keys"));
        if (name == "values") {
          array_t out;
          for (auto& kv : *self.o) out.push_back(kv.second);
          return value::array(std::move(out));
        }
        value key = arg(a, kw, 0, "key");
        const value* v = key.is_string() ? self.find(key.s) : nullptr;
        return v ? *v : arg(a, kw, 1, "default", value::none());
      }
      const std::string& s = self.s;
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        value chars = arg(a, kw, 0, "chars");
        return value::string(py_strip(s, name != "rstrip", name != "lstrip", chars.is_string() ? &chars : nullptr));
      }
      if (name == "upper") return value::string(unicode_upper(s));
      if (name == "lower") return value::string(unicode_lower(s));
      if (name == "title") return value::string(py_title(s, false));
      if (name == "capitalize") return value::string(py_title(s, true));
      if (name == "startswith" || name == "endswith") {
        value p = arg(a, kw, 0, "prefix");
        array_t opts = p.is_array() ? *p.a : array_t{p};
        for (auto& o : opts) {
          if (!o.is_string()) fail(fmt::format("{}() needs a string", name));
          bool hit = name == "startswith" ? s.compare(0, o.s.size(), o.s) == 0
                                          : s.size() >= o.s.size() && s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0;
          if (hit) return value::boolean(true);
        }
        return value::boolean(false);
      }
      if (name == "replace")
        return value::string(py_replace(s, to_str(arg(a, kw, 0, "old")), to_str(arg(a, kw, 1, "new")),
                                        arg(a, kw, 2, "count", value::integer(-1)).as_int()));
      if (name == "split") {
        value sep = arg(a, kw, 0, "sep", value::none());
        int64_t maxsplit = arg(a, kw, 1, "maxsplit", value::integer(-1)).as_int();
        array_t out;
        if (sep.is_none() || sep.is_undefined()) {
          size_t i = 0;
          auto skip_ws = [&] {
            while (i < s.size()) {
              size_t n;
              if (!is_space_char(decode_utf8(s, i, &n))) break;
              i += n;
            }
          };
          skip_ws();
          while (i < s.size()) {
            if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
              std::string rest = py_strip(s.substr(i), false, true, nullptr);
              out.push_back(value::string(rest));
              break;
            }
            size_t b = i;
            while (i < s.size()) {
              size_t n;
              if (is_space_char(decode_utf8(s, i, &n))) break;
              i += n;
            }
            out.push_back(value::string(s.substr(b, i - b)));
            skip_ws();
          }
          return value::array(std::move(out));
        }
        std::string d = to_str(sep);
        if (d.empty()) fail("split(): empty separator");
        size_t last = 0;
        for (size_t pos; (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) &&
                         (pos = s.find(d, last)) != std::string::npos;
             last = pos + d.size())
          out.push_back(value::string(s.substr(last, pos - last)));
        out.push_back(value::string(s.substr(last)));
        return value::array(std::move(out));
      }
      if (name == "join") {
        std::string out;
        array_t items = iterate(arg(a, kw, 0, "iterable"), "join");
        for (size_t k = 0; k < items.size(); ++k) out += (k ? s : "") + to_str(items[k]);
        return value::string(out);
      }
      if (name == "count" || name == "find") {
        std::string sub = to_str(arg(a, kw, 0, "sub"));
        if (name == "find") {
          size_t pos = s.find(sub);
          return value::integer(pos == std::string::npos ? -1 : static_cast<int64_t>(char_count(s.substr(0, pos))));
        }
        if (sub.empty()) return value::integer(static_cast<int64_t>(char_count(s) + 1));
        int64_t c = 0;
        for (size_t pos = 0; (pos = s.find(sub, pos)) != std::string::npos; pos += sub.size()) ++c;
        return value::integer(c);
      }
      fail(fmt::format("unsupported method '{}'", name));
    });
  }

  value get_item(const value& obj, const value& key, int line) {
    switch (obj.k) {
      case value::kind::undefined: undefined_error(obj, line, " (indexing)");
      case value::kind::object: {
        if (!key.is_string()) return value::undefined();
        if (const value* v = obj.find(key.s)) return *v;
        return value::undefined(key.s);
      }
      case value::kind::array: {
        if (!key.is_numeric()) {
          if (key.is_string()) return get_attr(obj, key.s, line);
          return value::undefined();
        }
        int64_t i = norm_index(key.as_int(), obj.a->size());
        if (i < 0 || i >= static_cast<int64_t>(obj.a->size())) return value::undefined(fmt::format("[{}]", key.as_int()));
        return (*obj.a)[static_cast<size_t>(i)];
      }
      case value::kind::string: {
        if (!key.is_numeric()) return get_attr(obj, to_str(key), line);
        auto cs = chars_of(obj.s);
        int64_t i = norm_index(key.as_int(), cs.size());
        if (i < 0 || i >= static_cast<int64_t>(cs.size())) return value::undefined();
        return value::string(cs[static_cast<size_t>(i)]);
      }
      default: return value::undefined();
    }
  }

  value slice(const value& obj, const value& a, const value& b, const value& c, int line) {
    int64_t step = c.is_undefined() || c.is_none() ? 1 : c.as_int();
    if (step == 0) fail(fmt::format("line {}: slice step cannot be zero", line));
    array_t items;
    bool is_str = obj.is_string();
    if (is_str) {
      for (auto& ch : chars_of(obj.s)) items.push_back(value::string(ch));
    } else if (obj.is_array()) {
      items = *obj.a;
    } else {
      fail(fmt::format("line {}: cannot slice {}", line, type_name(obj)));
    }
    int64_t n = static_cast<int64_t>(items.size());
    auto bound = [&](const value& v, int64_t dflt) {
      if (v.is_undefined() || v.is_none()) return dflt;
      int64_t x = v.as_int();
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    int64_t start = bound(a, step > 0 ? 0 : n - 1), stop = bound(b, step > 0 ? n : -1);
    array_t out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(items[static_cast<size_t>(i)]);
    if (!is_str) return value::array(std::move(out));
    std::string s;
    for (auto& x : out) s += x.s;
    return value::string(s);
  }

  value arith(const std::string& op, const value& x, const value& y, int line) {
    value r = arith_unchecked(op, x, y, line);
    if ((r.is_string() && r.s.size() > limits_.max_bytes) || (r.is_array() && r.a->size() > limits_.max_bytes / 16))
      fail(fmt::format("line {}: the result of '{}' is larger than {} bytes", line, op, limits_.max_bytes));
    return r;
  }

  value arith_unchecked(const std::string& op, const value& x, const value& y, int line) {
    if (op == "~") return value::string(to_str(x) + to_str(y));
    if (x.is_undefined()) undefined_error(x, line, fmt::format(" (operand of '{}')", op));
    if (y.is_undefined()) undefined_error(y, line, fmt::format(" (operand of '{}')", op));
    if (op == "+") {
      if (x.is_string() && y.is_string()) return value::string(x.s + y.s);
      if (x.is_array() && y.is_array()) {
        array_t out = *x.a;
        out.insert(out.end(), y.a->begin(), y.a->end());
        return value::array(std::move(out));
      }
    }
    if (op == "*" && ((x.is_string() && y.k == value::kind::integer) || (y.is_string() && x.k == value::kind::integer))) {
      const std::string& s = x.is_string() ? x.s : y.s;
      int64_t times = x.is_string() ? y.i : x.i;
      if (times > 0 && static_cast<uint64_t>(times) * s.size() > limits_.max_bytes)
        fail(fmt::format("line {}: string repetition longer than {} bytes", line, limits_.max_bytes));
      std::string out;
      for (int64_t k = 0; k < times; ++k) out += s;
      return value::string(out);
    }
    if (!x.is_numeric() || !y.is_numeric())
      fail(fmt::format("line {}: unsupported operand types for {}: {} and {}", line, op, type_name(x), type_name(y)));
    bool ints = x.k != value::kind::number && y.k != value::kind::number;
    if (op == "/") {
      if (y.as_double() == 0) fail(fmt::format("line {}: division by zero", line));
      return value::number(x.as_double() / y.as_double());
    }
    if (ints) {
      int64_t a = x.as_int(), b = y.as_int();
      if (op == "+") return value::integer(a + b);
      if (op == "-") return value::integer(a - b);
      if (op == "*") return value::integer(a * b);
      if (op == "//" || op == "%") {
        if (b == 0) fail(fmt::format("line {}: division by zero", line));
        int64_t q = a / b, r = a % b;
        if (r != 0 && ((r < 0) != (b < 0))) --q, r += b;
        return value::integer(op == "//" ? q : r);
      }
      if (op == "**") {
        if (b < 0) return value::number(std::pow(static_cast<double>(a), static_cast<double>(b)));
        int64_t r = 1;
        for (int64_t k = 0; k < b && k < 64; ++k) r *= a;
        return value::integer(r);
      }
    }
    double a = x.as_double(), b = y.as_double();
    if (op == "+") return value::number(a + b);
    if (op == "-") return value::number(a - b);
    if (op == "*") return value::number(a * b);
    if (op == "**") return value::number(std::pow(a, b));
    if (b == 0) fail(fmt::format("line {}: division by zero", line));
    double q = std::floor(a / b);
    return value::number(op == "//" ? q : a - q * b);
  }

  bool run_test(const std::string& name, const value& v, std::vector<value>& args, int line) {
    auto need_arg = [&]() -> value& {
      if (args.empty()) fail(fmt::format("line {}: test '{}' needs an argument", line, name));
      return args[0];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "string") return v.is_string();
    if (name == "number") return v.is_numeric();
    if (name == "integer") return v.k == value::kind::integer;
    if (name == "float") return v.k == value::kind::number;
    if (name == "boolean") return v.k == value::kind::boolean;
    if (name == "true") return v.k == value::kind::boolean && v.b;
    if (name == "false") return v.k == value::kind::boolean && !v.b;
    if (name == "mapping") return v.is_object();
    // Jinja's Undefined iterates as empty, so it passes these two tests.
    if (name == "iterable" || name == "sequence") return v.is_array() || v.is_object() || v.is_string() || v.is_undefined();
    if (name == "callable") return v.k == value::kind::function;
    if (name == "even" || name == "odd") {
      if (v.k != value::kind::integer) fail(fmt::format("line {}: test '{}' needs an integer", line, name));
      return (((v.i % 2) + 2) % 2 == 0) == (name == "even");
    }
    if (name == "divisibleby") {
      int64_t d = need_arg().as_int();
      if (d == 0) fail(fmt::format("line {}: divisibleby(0)", line));
      return v.as_int() % d == 0;
    }
    if (name == "eq" || name == "equalto") return equal(v, need_arg());
    if (name == "ne") return !equal(v, need_arg());
    if (name == "lt") return compare(v, need_arg()) < 0;
    if (name == "gt") return compare(v, need_arg()) > 0;
    if (name == "le") return compare(v, need_arg()) <= 0;
    if (name == "ge") return compare(v, need_arg()) >= 0;
    if (name == "in") return contains(need_arg(), v);
    if (name == "lower") return v.is_string() && unicode_lower(v.s) == v.s;
    if (name == "upper") return v.is_string() && unicode_upper(v.s) == v.s;
    fail(fmt::format("line {}: unsupported test '{}'", line, name));
  }

  value apply_filter(const std::string& name, const value& v, std::vector<value>& a, kwargs_t& kw, int line) {
    auto need_string = [&]() -> const std::string& {
      if (v.is_undefined()) undefined_error(v, line, fmt::format(" (filter '{}')", name));
      if (!v.is_string()) fail(fmt::format("line {}: filter '{}' needs a string, not {}", line, name, type_name(v)));
      return v.s;
    };
    if (name == "trim") {
      value chars = arg(a, kw, 0, "chars");
      return value::string(py_strip(need_string(), true, true, chars.is_string() ? &chars : nullptr));
    }
    if (name == "upper") return value::string(unicode_upper(to_str(v)));
    if (name == "lower") return value::string(unicode_lower(to_str(v)));
    if (name == "title") return value::string(py_title(to_str(v), false));
    if (name == "capitalize") return value::string(py_title(to_str(v), true));
    if (name == "string") return value::string(to_str(v));
    if (name == "safe" || name == "e" || name == "escape") return v;
    if (name == "length" || name == "count") {
      switch (v.k) {
        case value::kind::string: return value::integer(static_cast<int64_t>(char_count(v.s)));
        case value::kind::array: return value::integer(static_cast<int64_t>(v.a->size()));
        case value::kind::object: return value::integer(static_cast<int64_t>(v.o->size()));
        case value::kind::undefined: return value::integer(0);
        default: fail(fmt::format("line {}: {} has no length", line, type_name(v)));
      }
    }
    if (name == "default" || name == "d") {
      bool boolean = truthy(arg(a, kw, 1, "boolean", value::boolean(false)));
      if (v.is_undefined() || (boolean && !truthy(v))) return arg(a, kw, 0, "default_value", value::string(""));
      return v;
    }
    if (name == "tojson") {
      value ind = arg(a, kw, 0, "indent", value::none());
      std::string out;
      to_json(v, out, ind.is_numeric() ? static_cast<int>(ind.as_int()) : -1, 0);
      return value::string(out);
    }
    if (name == "int") {
      if (v.is_numeric()) return value::integer(v.as_int());
      if (v.is_string()) {
        try {
          return value::integer(std::stoll(py_strip(v.s, true, true, nullptr)));
        } catch (...) {
          return arg(a, kw, 0, "default", value::integer(0));
        }
      }
      return arg(a, kw, 0, "default", value::integer(0));
    }
    if (name == "float") {
      if (v.is_numeric()) return value::number(v.as_double());
      if (v.is_string()) {
        try {
          return value::number(std::stod(v.s));
        } catch (...) {
        }
      }
      return arg(a, kw, 0, "default", value::number(0));
    }
    if (name == "abs") {
      if (v.k == value::kind::integer) return value::integer(v.i < 0 ? -v.i : v.i);
      if (v.is_numeric()) return value::number(std::fabs(v.as_double()));
      fail(fmt::format("line {}: abs of {}", line, type_name(v)));
    }
    if (name == "round") {
      int64_t prec = arg(a, kw, 0, "precision", value::integer(0)).as_int();
      double m = std::pow(10.0, static_cast<double>(prec));
      return value::number(std::nearbyint(v.as_double() * m) / m);
    }
    array_t items = iterate(v, name.c_str());
    if (name == "join") {
      std::string sep = to_str(arg(a, kw, 0, "d", value::string("")));
      value attr = arg(a, kw, 1, "attribute");
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        value x = attr.is_undefined() ? items[k] : get_attr(items[k], to_str(attr), line);
        out += (k ? sep : "") + to_str(x);
      }
      return value::string(out);
    }
    if (name == "first") return items.empty() ? value::undefined("first") : items.front();
    if (name == "last") return items.empty() ? value::undefined("last") : items.back();
    if (name == "list") return value::array(items);
    if (name == "reverse") {
      std::reverse(items.begin(), items.end());
      if (v.is_string()) {
        std::string s;
        for (auto& x : items) s += x.s;
        return value::string(s);
      }
      return value::array(std::move(items));
    }
    if (name == "replace") {
      return value::string(py_replace(need_string(), to_str(arg(a, kw, 0, "old")), to_str(arg(a, kw, 1, "new")),
                                      arg(a, kw, 2, "count", value::integer(-1)).as_int()));
    }
    if (name == "items") {
      if (!v.is_object()) fail(fmt::format("line {}: items of {}", line, type_name(v)));
      array_t out;
      for (auto& [k, x] : *v.o) out.push_back(value::array({value::string(k), x}));
      return value::array(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr") {
      if (a.empty()) fail(fmt::format("line {}: {} needs an attribute name", line, name));
      std::string attr = to_str(a[0]);
      std::vector<value> test_args(a.size() > 2 ? a.begin() + 2 : a.end(), a.end());
      array_t out;
      for (auto& x : items) {
        value field = get_attr_path(x, attr, line);
        bool ok = a.size() > 1 ? run_test(to_str(a[1]), field, test_args, line) : truthy(field);
        if (ok == (name == "selectattr")) out.push_back(x);
      }
      return value::array(std::move(out));
    }
    if (name == "select" || name == "reject") {
      std::vector<value> test_args(a.size() > 1 ? a.begin() + 1 : a.end(), a.end());
      array_t out;
      for (auto& x : items) {
        bool ok = a.empty() ? truthy(x) : run_test(to_str(a[0]), x, test_args, line);
        if (ok == (name == "select")) out.push_back(x);
      }
      return value::array(std::move(out));
    }
    if (name == "map") {
      array_t out;
      value attr = arg(a, kw, 99, "attribute");
      for (auto& x : items) {
        if (!attr.is_undefined()) {
          value field = get_attr_path(x, to_str(attr), line);
          if (field.is_undefined()) field = arg(a, kw, 99, "default");
          out.push_back(field);
        } else {
          if (a.empty()) fail(fmt::format("line {}: map needs a filter name or attribute=", line));
          std::string f = to_str(a[0]);
          if (!kFilters.count(f)) fail(fmt::format("line {}: unsupported filter '{}'", line, f));
          std::vector<value> rest(a.begin() + 1, a.end());
          kwargs_t none;
          out.push_back(apply_filter(f, x, rest, none, line));
        }
      }
      return value::array(std::move(out));
    }
    if (name == "unique") {
      array_t out;
      for (auto& x : items)
        if (std::none_of(out.begin(), out.end(), [&](const value& y) { return equal(x, y); })) out.push_back(x);
      return value::array(std::move(out));
    }
    if (name == "sort") {
      bool rev = truthy(arg(a, kw, 0, "reverse", value::boolean(false)));
      value attr = arg(a, kw, 2, "attribute");
      auto key = [&](const value& x) { return attr.is_undefined() ? x : get_attr_path(x, to_str(attr), line); };
      std::stable_sort(items.begin(), items.end(), [&](const value& x, const value& y) {
        int c = compare(key(x), key(y));
        return rev ? c > 0 : c < 0;
      });
      return value::array(std::move(items));
    }
    fail(fmt::format("line {}: unsupported filter '{}'", line, name));
  }

  value get_attr_path(const value& x, const std::string& path, int line) {
    value cur = x;
    size_t b = 0;
    while (true) {
      size_t e = path.find('.', b);
      std::string part = path.substr(b, e == std::string::npos ? std::string::npos : e - b);
      if (cur.is_undefined()) return cur;
      cur = cur.is_array() && !part.empty() && std::isdigit(static_cast<unsigned char>(part[0]))
                ? get_item(cur, value::integer(std::stoll(part)), line)
                : get_attr(cur, part, line);
      if (e == std::string::npos) return cur;
      b = e + 1;
    }
  }

  value eval(const expr& e) {
    switch (e.k) {
      case expr::kind::literal: return e.lit;
      case expr::kind::name: return lookup(e.name);
      case expr::kind::attr: return get_attr(eval(*e.kids[0]), e.name, e.line);
      case expr::kind::item: return get_item(eval(*e.kids[0]), eval(*e.kids[1]), e.line);
      case expr::kind::slice: {
        value obj = eval(*e.kids[0]);
        if (obj.is_undefined()) undefined_error(obj, e.line, " (slicing)");
        auto opt = [&](size_t k) { return e.kids[k] ? eval(*e.kids[k]) : value::undefined(); };
        return slice(obj, opt(1), opt(2), opt(3), e.line);
      }
      case expr::kind::call: {
        value fn = eval(*e.kids[0]);
        if (fn.is_undefined()) undefined_error(fn, e.line, " (called as a function)");
        if (fn.k != value::kind::function) fail(fmt::format("line {}: {} is not callable", e.line, type_name(fn)));
        std::vector<value> args;
        for (size_t k = 1; k < e.kids.size(); ++k) args.push_back(eval(*e.kids[k]));
        kwargs_t kw;
        for (auto& [name, x] : e.kwargs) kw.emplace_back(name, eval(*x));
        return (*fn.f)(args, kw);
      }
      case expr::kind::filter: {
        value v = eval(*e.kids[0]);
        std::vector<value> args;
        for (size_t k = 1; k < e.kids.size(); ++k) args.push_back(eval(*e.kids[k]));
        kwargs_t kw;
        for (auto& [name, x] : e.kwargs) kw.emplace_back(name, eval(*x));
        return apply_filter(e.name, v, args, kw, e.line);
      }
      case expr::kind::test: {
        value v = eval(*e.kids[0]);
        std::vector<value> args;
        for (size_t k = 1; k < e.kids.size(); ++k) args.push_back(eval(*e.kids[k]));
        return value::boolean(run_test(e.name, v, args, e.line) != e.negated);
      }
      case expr::kind::neg:
      case expr::kind::pos: {
        value v = eval(*e.kids[0]);
        if (!v.is_numeric()) fail(fmt::format("line {}: unary minus on {}", e.line, type_name(v)));
        if (e.k == expr::kind::pos) return v;
        return v.k == value::kind::number ? value::number(-v.d) : value::integer(-v.as_int());
      }
      case expr::kind::not_: return value::boolean(!truthy(eval(*e.kids[0])));
      case expr::kind::and_: {
        value l = eval(*e.kids[0]);
        return truthy(l) ? eval(*e.kids[1]) : l;
      }
      case expr::kind::or_: {
        value l = eval(*e.kids[0]);
        return truthy(l) ? l : eval(*e.kids[1]);
      }
      case expr::kind::cond: return truthy(eval(*e.kids[0])) ? eval(*e.kids[1]) : eval(*e.kids[2]);
      case expr::kind::binary: {
        value l = eval(*e.kids[0]), r = eval(*e.kids[1]);
        const std::string& op = e.name;
        if (op == "==") return value::boolean(equal(l, r));
        if (op == "!=") return value::boolean(!equal(l, r));
        if (op == "<") return value::boolean(compare(l, r) < 0);
        if (op == ">") return value::boolean(compare(l, r) > 0);
        if (op == "<=") return value::boolean(compare(l, r) <= 0);
        if (op == ">=") return value::boolean(compare(l, r) >= 0);
        if (op == "in") return value::boolean(contains(r, l));
        if (op == "not in") return value::boolean(!contains(r, l));
        return arith(op, l, r, e.line);
      }
      case expr::kind::list: {
        array_t out;
        for (auto& k : e.kids) out.push_back(eval(*k));
        return value::array(std::move(out));
      }
      case expr::kind::dict: {
        value out = value::object();
        for (size_t k = 0; k + 1 < e.kids.size(); k += 2) {
          value key = eval(*e.kids[k]);
          if (!key.is_string()) fail(fmt::format("line {}: dict keys must be strings", e.line));
          out.put(key.s, eval(*e.kids[k + 1]));
        }
        return out;
      }
    }
    return value::undefined();
  }

  void count_step(int line) {
    if (++steps_ > limits_.max_steps) fail(fmt::format("line {}: the template runs more than {} steps", line, limits_.max_steps));
  }

  std::vector<value> scopes_;  // objects; [0] holds the render variables
  render_limits limits_;
  size_t steps_ = 0;
  int macro_depth_ = 0;
};

}  // namespace

expected<chat_template> chat_template::parse(std::string_view source, const std::string& name) {
  try {
    parser p(lex(source));
    auto root = std::make_shared<template_node>();
    root->k = template_node::kind::body;
    root->body = p.parse_template();
    chat_template t;
    t.name_ = name;
    t.root_ = std::move(root);
    return t;
  } catch (const template_error& e) {
    return invalid_input("{}: {}", name, e.what);
  }
}

expected<std::string> chat_template::render_json(std::string_view context_json, const render_limits& limits) const {
  auto j = nlohmann::ordered_json::parse(context_json.begin(), context_json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_input("{}: the render context is not a JSON object", name_);
  try {
    renderer r(from_json(j), limits);
    std::string out;
    r.render(root_->body, out);
    return out;
  } catch (const template_error& e) {
    return invalid_input("{}: {}", name_, e.what);
  }
}

expected<std::string> chat_template::apply(const std::vector<chat_message>& messages, bool add_generation_prompt,
                                           const std::string& bos_token, const std::string& eos_token) const {
  nlohmann::ordered_json ctx;
  ctx["messages"] = nlohmann::ordered_json::array();
  for (auto& m : messages) ctx["messages"].push_back({{"role", m.role}, {"content", m.content}});
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token;
  ctx["eos_token"] = eos_token;
  return render_json(ctx.dump());
}

}  // namespace gpugrid::llm
