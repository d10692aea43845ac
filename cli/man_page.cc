#include "cli/man_page.h"

#include <fmt/format.h>

namespace gpugrid::cli {

namespace {

// Text safe in a roff line: backslashes doubled, '-' as \- (a minus, so copy-paste works), and
// a leading '.' or '\'' escaped so it is not read as a request.
std::string roff(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}

std::string flag_synopsis(const flag_spec& f) {
  std::string names;
  for (size_t i = 0; i < f.names.size(); ++i) names += (i ? ", " : "") + std::string("\\fB") + roff(f.names[i]) + "\\fR";
  if (!f.value_name.empty()) names += " \\fI" + roff(f.value_name) + "\\fR";
  return names;
}

std::string flags_section(const std::vector<flag_spec>& flags) {
  std::string out;
  for (const auto& f : flags) {
    out += ".TP\n" + flag_synopsis(f) + "\n" + roff(f.help);
    if (f.repeatable) out += " (repeatable)";
    out += "\n";
  }
  return out;
}

}  // namespace

std::string man_page(const cli_spec& spec, const std::string& version) {
  const std::string& p = spec.program;
  std::string out;
  out += fmt::format(".TH {} 1 \"\" \"{} {}\" \"User Commands\"\n", "GPUGRID", p, roff(version));
  out += ".SH NAME\n" + p + " \\- a peer\\-to\\-peer GPU inference grid for ONNX models\n";
  out += ".SH SYNOPSIS\n";
  out += ".B " + p + "\n[\\fB\\-h\\fR] [\\fB\\-V\\fR] \\fICOMMAND\\fR [\\fIFLAGS\\fR] [\\fIARGUMENTS\\fR]\n";
  out += ".SH DESCRIPTION\n";
  out += "Sell inference time with \\fB" + p + " offer\\fR; run an ONNX model on the grid with \\fB" + p +
         " run\\fR \\fIMODEL INPUT...\\fR (or in this process with \\fB\\-\\-local\\fR).\n";
  out += "Every command takes \\fB\\-h\\fR (its help), \\fB\\-q\\fR (no notes, only warnings and errors) and "
         "\\fB\\-v\\fR (debug lines too).\n";
  out += ".SH OPTIONS\n" + flags_section(spec.global_flags);
  out += ".SH COMMANDS\n";
  for (const auto& c : spec.commands) {
    out += ".SS " + p + " " + c.name;
    for (const auto& pos : c.positionals) out += " " + pos.name + (pos.repeats ? "..." : "");
    out += "\n" + roff(c.summary) + ".\n";
    if (!c.positionals.empty()) {
      out += ".RS\n";
      for (const auto& pos : c.positionals) out += ".TP\n\\fI" + roff(pos.name) + "\\fR\n" + roff(pos.help) + "\n";
      out += ".RE\n";
    }
    if (!c.flags.empty()) out += ".RS\n" + flags_section(c.flags) + ".RE\n";
  }
  out += ".SH JSON OUTPUT\n"
         "With \\fB\\-\\-json\\fR a command prints exactly one JSON document on stdout (an object; lists are "
         "arrays with one element per line) and nothing else there. \\fBoffer \\-\\-json\\fR, which runs until "
         "stopped, prints JSON Lines instead: one object per event, each with \\fBevent\\fR and \\fBtime\\fR.\n";
  out += ".SH ENVIRONMENT\n"
         ".TP\n.B GPUGRID_PEERS\nComma\\-separated bootstrap peer URLs; replaces the peers in config.toml.\n"
         ".TP\n.B XDG_CONFIG_HOME\nWhere gpugrid/config.toml is read (default ~/.config).\n"
         ".TP\n.B XDG_DATA_HOME\nWhere the data folder is (default ~/.local/share): identity key, ledger, "
         "model cache.\n";
  out += ".SH FILES\n"
         ".TP\n.I $XDG_CONFIG_HOME/gpugrid/config.toml\nSettings (\\fB" + p + " config show\\fR, \\fB" + p +
         " config set\\fR).\n"
         ".TP\n.I $XDG_DATA_HOME/gpugrid/identity.key\nThis node's Ed25519 key.\n"
         ".TP\n.I $XDG_DATA_HOME/gpugrid/ledger.log\nThe hash\\-chained ledger of paid jobs.\n";
  out += ".SH EXIT STATUS\n"
         ".TP\n.B 0\nSuccess.\n.TP\n.B 1\nOther errors (the system refused, internal errors).\n"
         ".TP\n.B 2\nBad usage or bad input.\n.TP\n.B 3\nNo provider could run the job.\n"
         ".TP\n.B 4\nProviders disagree.\n";
  return out;
}

}  // namespace gpugrid::cli
