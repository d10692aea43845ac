#include "cli/completion.h"

#include <fmt/format.h>

namespace gpugrid::cli {

namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

void replace_all(std::string* s, const std::string& from, const std::string& to) {
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) s->replace(at, from.size(), to);
}

std::vector<std::string> command_names(const cli_spec& spec) {
  std::vector<std::string> names;
  for (const auto& c : spec.commands) names.push_back(c.name);
  return names;
}

std::vector<std::string> all_flag_names(const std::vector<flag_spec>& flags) {
  std::vector<std::string> names;
  for (const auto& f : flags) names.insert(names.end(), f.names.begin(), f.names.end());
  return names;
}

std::vector<std::string> valued_flag_names(const std::vector<flag_spec>& flags) {
  std::vector<std::string> names;
  for (const auto& f : flags)
    if (f.kind != value_kind::none) names.insert(names.end(), f.names.begin(), f.names.end());
  return names;
}

// ---- bash ----

// A kind as the bash script's helpers name it ("model", "choice a b c", ...).
std::string bash_kind(value_kind kind, const std::vector<std::string>& choices) {
  switch (kind) {
    case value_kind::none: return "none";
    case value_kind::text: return "text";
    case value_kind::file: return "file";
    case value_kind::directory: return "directory";
    case value_kind::model: return "model";
    case value_kind::input: return "input";
    case value_kind::url: return "url";
    case value_kind::choice: return "choice " + join(choices, " ");
  }
  return "none";
}

// Single-quoted for bash: ' becomes '\''.
std::string bash_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

const char* const kBashHelpers = R"BASH(
# Offers files for the word being completed; given extensions, prefers the files that have
# one (and folders), falling back to every file when none matches.
_gpugrid_files() {
  local cur="$1" ext
  shift
  local IFS=$'\n'
  local -a found=()
  for ext in "$@"; do
    found+=( $(compgen -f -X "!*.$ext" -- "$cur") )
  done
  if (( ${#found[@]} > 0 )); then
    found+=( $(compgen -d -- "$cur") )
  else
    found=( $(compgen -f -- "$cur") )
  fi
  COMPREPLY=( "${found[@]}" )
  compopt -o filenames 2>/dev/null
  return 0
}

# The configured peers (config.toml or GPUGRID_PEERS), as `gpugrid config show` reports them.
_gpugrid_configured_peers() {
  command gpugrid config show --json 2>/dev/null |
    sed -n 's/.*"peers":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '"'
}

# Completes the word $2 as a value of kind $1 (see _gpugrid_flag_kind).
_gpugrid_complete_kind() {
  local kind="$1" cur="$2" name
  case "$kind" in
    file) _gpugrid_files "$cur" ;;
    model) _gpugrid_files "$cur" @MODEL_EXTS@ ;;
    input)
      if [[ "$cur" == [!/-]*=* ]]; then  # NAME=FILE in one word (no '=' in COMP_WORDBREAKS)
        name="${cur%%=*}="
        _gpugrid_files "${cur#*=}" @INPUT_EXTS@
        COMPREPLY=( "${COMPREPLY[@]/#/$name}" )
      else
        _gpugrid_files "$cur" @INPUT_EXTS@
      fi
      ;;
    url)
      local IFS=$'\n'
      COMPREPLY=( $(compgen -W "ws://"$'\n'"wss://"$'\n'"$(_gpugrid_configured_peers)" -- "$cur") )
      compopt -o nospace 2>/dev/null
      ;;
    directory)
      local IFS=$'\n'
      COMPREPLY=( $(compgen -d -- "$cur") )
      compopt -o filenames 2>/dev/null
      ;;
    choice\ *) COMPREPLY=( $(compgen -W "${kind#choice }" -- "$cur") ) ;;
    *) COMPREPLY=() ;;
  esac
  return 0
}

_gpugrid() {
  local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" word flag="" prefix="" kind
  local i start=1 nth=0 skip=0 rest=0
  COMPREPLY=()

  # The command is the first word after the program that is not a flag.
  for (( i = 1; i < COMP_CWORD; i++ )); do
    word="${COMP_WORDS[i]}"
    if [[ "$word" != -* ]]; then
      cmd="$word"
      start=$(( i + 1 ))
      break
    fi
  done
  if [[ -z "$cmd" ]]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=( $(compgen -W "$(_gpugrid_flags "")" -- "$cur") )
    else
      COMPREPLY=( $(compgen -W "$_gpugrid_commands" -- "$cur") )
    fi
    return 0
  fi

  # The value of a flag: "--flag VALUE" or "--flag=VALUE" (bash splits words at '=').
  local valued=" $(_gpugrid_valued "$cmd") "
  if [[ "$cur" == "=" ]]; then
    flag="${COMP_WORDS[COMP_CWORD-1]}"
    cur=""
  elif [[ "${COMP_WORDS[COMP_CWORD-1]}" == "=" ]] && (( COMP_CWORD - 2 >= start )); then
    flag="${COMP_WORDS[COMP_CWORD-2]}"
  elif [[ "$cur" == --*=* ]]; then
    flag="${cur%%=*}"
    prefix="$flag="
    cur="${cur#*=}"
  elif (( COMP_CWORD - 1 >= start )) && [[ "$valued" == *" ${COMP_WORDS[COMP_CWORD-1]} "* ]]; then
    flag="${COMP_WORDS[COMP_CWORD-1]}"
  fi
  if [[ -n "$flag" && "$flag" != -* ]]; then
    # NAME=FILE, split by bash at '=': the file after it.
    _gpugrid_complete_kind input "$cur"
    return 0
  fi
  if [[ -n "$flag" ]]; then
    _gpugrid_complete_kind "$(_gpugrid_flag_kind "$cmd" "$flag")" "$cur"
    if [[ -n "$prefix" ]]; then
      COMPREPLY=( "${COMPREPLY[@]/#/$prefix}" )
    fi
    return 0
  fi

  # Count the positional arguments before this word, skipping flags and their values.
  for (( i = start; i < COMP_CWORD; i++ )); do
    word="${COMP_WORDS[i]}"
    if (( skip )); then
      skip=0
      [[ "$word" == "=" ]] && skip=1
      continue
    fi
    if (( rest )); then
      nth=$(( nth + 1 ))
      continue
    fi
    case "$word" in
      --) rest=1 ;;
      =) skip=1 ;;  # NAME = FILE (bash splits at '='): NAME was counted, FILE is not
      --*=*) ;;
      -*) [[ "$valued" == *" $word "* ]] && skip=1 ;;
      *) nth=$(( nth + 1 )) ;;
    esac
  done
  if [[ "$cur" == -* ]] && (( ! rest )); then
    COMPREPLY=( $(compgen -W "$(_gpugrid_flags "$cmd")" -- "$cur") )
    return 0
  fi
  kind="$(_gpugrid_positional_kind "$cmd" "$nth")"
  if [[ "$kind" == none ]]; then
    COMPREPLY=( $(compgen -W "$(_gpugrid_flags "$cmd")" -- "$cur") )
  else
    _gpugrid_complete_kind "$kind" "$cur"
  fi
  return 0
}

complete -F _gpugrid gpugrid
)BASH";

// ---- zsh ----

// Text inside a single-quoted zsh word.
std::string zsh_single(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out;
}

// A description inside an _arguments "[...]".
std::string zsh_bracket(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ']' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return zsh_single(out);
}

// A message or name between _arguments colons.
std::string zsh_colon(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return zsh_single(out);
}

std::string zsh_action(value_kind kind, const std::vector<std::string>& choices) {
  switch (kind) {
    case value_kind::none: return "";
    case value_kind::text: return " ";
    case value_kind::file: return "_files";
    case value_kind::directory: return "_files -/";
    case value_kind::model:
    case value_kind::input: {
      auto exts = preferred_extensions(kind);
      std::string files = exts.size() == 1 ? "_files -g \"*." + exts[0] + "\"" : "_files -g \"*.(" + join(exts, "|") + ")\"";
      return kind == value_kind::input ? "_gpugrid_input" : files;
    }
    case value_kind::url: return "_gpugrid_peer_urls";
    case value_kind::choice: return "(" + join(choices, " ") + ")";
  }
  return " ";
}

// One _arguments spec for a flag, e.g. '(-o --output)'{-o+,--output=}'[...]:FILE:_files'.
std::string zsh_flag(const flag_spec& f) {
  bool help_like = f.names.size() && (f.names.back() == "--help" || f.names.back() == "--version");
  bool valued = f.kind != value_kind::none;
  std::vector<std::string> names;
  for (const auto& n : f.names) {
    if (!valued) names.push_back(n);
    else names.push_back(n + (n.rfind("--", 0) == 0 ? "=" : "+"));
  }
  std::string exclusion;
  if (help_like) exclusion = "(- *)";
  else if (!f.repeatable) exclusion = f.names.size() > 1 ? "(" + join(f.names, " ") + ")" : "";
  std::string out = "'";
  if (f.repeatable) out += "*";
  out += exclusion;
  if (names.size() == 1) {
    out += names[0] + "[";
  } else {
    out += "'{" + join(names, ",") + "}'[";
  }
  out += zsh_bracket(f.help) + "]";
  if (valued) out += ":" + zsh_colon(f.value_name) + ":" + zsh_single(zsh_action(f.kind, f.choices));
  return out + "'";
}

std::string zsh_positional(const positional_spec& p, size_t index) {
  std::string out = "'";
  out += p.repeats ? "*" : std::to_string(index + 1);
  out += ":" + zsh_colon(p.name) + ":" + zsh_single(zsh_action(p.kind, p.choices)) + "'";
  return out;
}

// ---- fish ----

// A single-quoted fish string.
std::string fish_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string fish_value(value_kind kind, const std::vector<std::string>& choices) {
  switch (kind) {
    case value_kind::none: return "";
    case value_kind::text: return " -x";
    case value_kind::file: return " -r -F";
    case value_kind::directory: return " -x -a '(__fish_complete_directories)'";
    case value_kind::model:
    case value_kind::input: return " -x -a '(__gpugrid_files " + join(preferred_extensions(kind), " ") + ")'";
    case value_kind::url: return " -x -a '(__gpugrid_peer_urls)'";
    case value_kind::choice: return " -x -a " + fish_quote(join(choices, " "));
  }
  return " -x";
}

const char* const kFishHelpers = R"FISH(
# The command word (the first argument that is not a flag), if one has been typed.
function __gpugrid_command
    for t in (commandline -opc)[2..-1]
        switch $t
            case '-*'
            case '*'
                echo $t
                return 0
        end
    end
    return 1
end

function __gpugrid_command_is
    set -l c (__gpugrid_command)
    test "$c" = "$argv[1]"
end

# True when the word being completed is positional argument $argv[1] of the command (0-based;
# "N+" means N or later). The other arguments are the command's flags that take a value.
function __gpugrid_positional
    set -l want $argv[1]
    set -l valued $argv[2..-1]
    set -l n -2
    set -l skip 0
    set -l rest 0
    for t in (commandline -opc)
        if test $skip -eq 1
            set skip 0
            continue
        end
        if test $rest -eq 0
            switch $t
                case --
                    set rest 1
                    continue
                case '--*=*'
                    continue
                case '-*'
                    if contains -- $t $valued
                        set skip 1
                    end
                    continue
            end
        end
        set n (math $n + 1)
    end
    if string match -q -- '*+' $want
        test $n -ge (string replace -- + '' $want)
    else
        test $n -eq $want
    end
end

# Files for the word being completed, preferring those with the given extensions (and
# folders); every file when none matches. fish's own file completion does the matching, so ~,
# escaped spaces and quotes work as everywhere else. NAME=FILE completes the file after '='.
function __gpugrid_files
    set -l token (commandline -ct)
    set -l name ''
    if string match -qr -- '^[^-/~=][^/=]*=' $token
        set name (string replace -r -- '=.*' '=' $token)
        set token (string replace -r -- '^[^=]*=' '' $token)
    end
    # A command without completions gets fish's default: file names.
    set -l all (complete -C"__gpugrid_no_such_command $token" | string replace -r -- '\t.*' '')
    set -l found
    for ext in $argv
        set -a found (string match -- "*.$ext" $all)
    end
    if test (count $found) -gt 0
        set -a found (string match -- '*/' $all)
    else
        set found $all
    end
    for f in $found
        echo $name$f
    end
end

# ws://, wss:// and the configured peers (config.toml or GPUGRID_PEERS).
function __gpugrid_peer_urls
    echo ws://
    echo wss://
    if command -q gpugrid
        command gpugrid config show --json 2>/dev/null | string match -r -g -- '"peers":\[([^]]*)\]' | string split , | string trim -c '"'
    end
end

function __gpugrid_no_command
    not __gpugrid_command >/dev/null
end
)FISH";

}  // namespace

std::vector<std::string> preferred_extensions(value_kind kind) {
  if (kind == value_kind::model) return {"onnx"};
  if (kind == value_kind::input) return {"npy", "pb", "bin"};
  return {};
}

std::string bash_completion(const cli_spec& spec) {
  std::string out;
  out += fmt::format("# bash completion for {0}\n", spec.program);
  out += fmt::format("# Generated by `{0} completion bash` from its command table; do not edit.\n", spec.program);
  out += fmt::format("# Install: source this file, or copy it to /usr/share/bash-completion/completions/{0}.\n\n",
                     spec.program);
  out += fmt::format("_gpugrid_commands={}\n\n", bash_quote(join(command_names(spec), " ")));

  out += "# The flags of a command (\"\": before the command).\n_gpugrid_flags() {\n  case \"$1\" in\n";
  out += fmt::format("    \"\") echo {} ;;\n", bash_quote(join(all_flag_names(spec.global_flags), " ")));
  for (const auto& c : spec.commands)
    out += fmt::format("    {}) echo {} ;;\n", c.name, bash_quote(join(all_flag_names(c.flags), " ")));
  out += "  esac\n}\n\n";

  out += "# The flags of a command that take a value.\n_gpugrid_valued() {\n  case \"$1\" in\n";
  for (const auto& c : spec.commands) {
    auto valued = valued_flag_names(c.flags);
    if (!valued.empty()) out += fmt::format("    {}) echo {} ;;\n", c.name, bash_quote(join(valued, " ")));
  }
  out += "  esac\n}\n\n";

  out += "# What the value of flag $2 of command $1 completes to.\n_gpugrid_flag_kind() {\n  case \"$1 $2\" in\n";
  for (const auto& c : spec.commands) {
    for (const auto& f : c.flags) {
      if (f.kind == value_kind::none) continue;
      std::vector<std::string> patterns;
      for (const auto& n : f.names) patterns.push_back(bash_quote(c.name + " " + n));
      out += fmt::format("    {}) echo {} ;;\n", join(patterns, "|"), bash_quote(bash_kind(f.kind, f.choices)));
    }
  }
  out += "    *) echo none ;;\n  esac\n}\n\n";

  out += "# What positional argument $2 (from 0) of command $1 completes to.\n"
         "_gpugrid_positional_kind() {\n  case \"$1\" in\n";
  for (const auto& c : spec.commands) {
    if (c.positionals.empty()) continue;
    out += fmt::format("    {})\n      case \"$2\" in\n", c.name);
    for (size_t i = 0; i < c.positionals.size(); ++i) {
      const auto& p = c.positionals[i];
      out += fmt::format("        {}) echo {} ;;\n", p.repeats ? "*" : std::to_string(i),
                         bash_quote(bash_kind(p.kind, p.choices)));
      if (p.repeats) break;
    }
    if (!c.positionals.back().repeats) out += "        *) echo none ;;\n";
    out += "      esac\n      ;;\n";
  }
  out += "    *) echo none ;;\n  esac\n}\n";
  std::string helpers = kBashHelpers;
  replace_all(&helpers, "@MODEL_EXTS@", join(preferred_extensions(value_kind::model), " "));
  replace_all(&helpers, "@INPUT_EXTS@", join(preferred_extensions(value_kind::input), " "));
  return out + helpers;
}

std::string zsh_completion(const cli_spec& spec) {
  std::string out;
  out += fmt::format("#compdef {0}\n", spec.program);
  out += fmt::format("# zsh completion for {0}\n", spec.program);
  out += fmt::format("# Generated by `{0} completion zsh` from its command table; do not edit.\n", spec.program);
  out += fmt::format("# Install: copy to a folder on $fpath as _{0}, or source it after compinit.\n\n", spec.program);

  out += "_gpugrid_commands() {\n  local -a commands\n  commands=(\n";
  for (const auto& c : spec.commands)
    out += fmt::format("    '{}:{}'\n", zsh_colon(c.name), zsh_single(c.summary));
  out += "  )\n  _describe -t commands 'gpugrid command' commands\n}\n\n";

  out += "# INPUT: FILE or NAME=FILE (the file after the '=').\n_gpugrid_input() {\n";
  out += "  compset -P '*='\n";
  {
    auto exts = preferred_extensions(value_kind::input);
    out += "  _files -g \"*.(" + join(exts, "|") + ")\"\n}\n\n";
  }
  out += "# ws://, wss:// and the configured peers (config.toml or GPUGRID_PEERS).\n_gpugrid_peer_urls() {\n";
  out += R"ZSH(  local -a urls
  urls=(ws:// wss:// ${(f)"$(command gpugrid config show --json 2>/dev/null |
    sed -n 's/.*"peers":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '"')"})
)ZSH";
  out += "  compadd -S '' -a urls\n}\n\n";
  out += "_gpugrid() {\n";
  out += "  local curcontext=\"$curcontext\" state state_descr line ret=1\n";
  out += "  typeset -A opt_args\n\n";
  out += "  _arguments -C \\\n";
  for (const auto& f : spec.global_flags) out += "    " + zsh_flag(f) + " \\\n";
  out += "    '1: :_gpugrid_commands' \\\n";
  out += "    '*:: :->args' && ret=0\n\n";
  out += "  case $state in\n    args)\n";
  out += "      curcontext=\"${curcontext%:*:*}:gpugrid-${words[1]}:\"\n";
  out += "      case ${words[1]} in\n";
  for (const auto& c : spec.commands) {
    out += fmt::format("        {})\n          _arguments \\\n", c.name);
    for (const auto& f : c.flags) out += "            " + zsh_flag(f) + " \\\n";
    for (size_t i = 0; i < c.positionals.size(); ++i) {
      out += "            " + zsh_positional(c.positionals[i], i) + " \\\n";
      if (c.positionals[i].repeats) break;
    }
    out += "            && ret=0\n          ;;\n";
  }
  out += "      esac\n      ;;\n  esac\n  return ret\n}\n\n";
  out += "if [[ \"${funcstack[1]}\" == _gpugrid ]]; then\n  _gpugrid \"$@\"\nelse\n  compdef _gpugrid gpugrid\nfi\n";
  return out;
}

std::string fish_completion(const cli_spec& spec) {
  std::string out;
  out += fmt::format("# fish completion for {0}\n", spec.program);
  out += fmt::format("# Generated by `{0} completion fish` from its command table; do not edit.\n", spec.program);
  out += fmt::format("# Install: copy to ~/.config/fish/completions/{0}.fish.\n", spec.program);
  out += kFishHelpers;
  out += "\n# No file names unless an argument asks for them.\ncomplete -c gpugrid -f\n\n";

  auto flag_line = [](const std::string& condition, const flag_spec& f) {
    std::string line = "complete -c gpugrid -n " + fish_quote(condition);
    for (const auto& n : f.names) {
      if (n.rfind("--", 0) == 0) line += " -l " + n.substr(2);
      else line += " -s " + n.substr(1);
    }
    line += fish_value(f.kind, f.choices);
    line += " -d " + fish_quote(f.help);
    return line + "\n";
  };

  out += "# Commands and the flags before them.\n";
  for (const auto& c : spec.commands)
    out += fmt::format("complete -c gpugrid -n '__gpugrid_no_command' -a {} -d {}\n", c.name, fish_quote(c.summary));
  for (const auto& f : spec.global_flags) out += flag_line("__gpugrid_no_command", f);

  for (const auto& c : spec.commands) {
    out += fmt::format("\n# {}\n", c.name);
    std::string is_cmd = "__gpugrid_command_is " + c.name;
    for (const auto& f : c.flags) out += flag_line(is_cmd, f);
    std::string valued = join(valued_flag_names(c.flags), " ");
    for (size_t i = 0; i < c.positionals.size(); ++i) {
      const auto& p = c.positionals[i];
      if (p.kind == value_kind::text) continue;
      std::string position = p.repeats ? std::to_string(i) + "+" : std::to_string(i);
      std::string condition = is_cmd + "; and __gpugrid_positional " + position + (valued.empty() ? "" : " " + valued);
      std::string value;
      switch (p.kind) {
        case value_kind::choice: value = " -a " + fish_quote(join(p.choices, " ")); break;
        case value_kind::file: value = " -F"; break;
        case value_kind::directory: value = " -a '(__fish_complete_directories)'"; break;
        case value_kind::model:
        case value_kind::input: value = " -a '(__gpugrid_files " + join(preferred_extensions(p.kind), " ") + ")'"; break;
        default: break;
      }
      if (value.empty()) continue;
      out += "complete -c gpugrid -n " + fish_quote(condition) + value + " -d " + fish_quote(p.name) + "\n";
      if (p.repeats) break;
    }
  }
  return out;
}

const std::vector<std::string>& completion_shells() {
  static const std::vector<std::string> shells = {"bash", "zsh", "fish"};
  return shells;
}

expected<std::string> completion_script(const cli_spec& spec, const std::string& shell) {
  if (shell == "bash") return bash_completion(spec);
  if (shell == "zsh") return zsh_completion(spec);
  if (shell == "fish") return fish_completion(spec);
  return status(error_kind::usage,
                fmt::format("no completion for shell '{}' (use {})", shell, join(completion_shells(), ", ")));
}

}  // namespace gpugrid::cli
