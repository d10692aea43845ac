// The jobs of `gpugrid run MODEL --batch SOURCE`: where they come from and what they are called.
//
// SOURCE is
//  - a folder: every regular file in it (sorted by name; hidden files skipped) is one job's
//    only input (the model must have exactly one input);
//  - a list file: one job per line, its INPUT arguments as for `run` (FILE or NAME=FILE,
//    separated by spaces); blank lines and lines starting with '#' are skipped; relative
//    paths are relative to the list file's folder;
//  - "-": NDJSON on stdin, one JSON object per line mapping input names to files
//    ({"x": "a.npy"}), with an optional "id" naming the job.
// A job's id names its output folder (DIR/<id>/): the first input file's name without its
// extension, or the NDJSON "id"; characters outside [A-Za-z0-9._-] become '_', and a repeated
// id gets "-2", "-3", ... in source order, so that the same source gives the same ids again
// (which is what resuming relies on).
//
// Pure parsing plus reading the folder/file; any thread. Failures are invalid_input naming the
// source and line.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid::cli {

struct batch_job {
  std::string id;
  std::vector<std::string> inputs;   // INPUT arguments as for run: FILE or NAME=FILE
};

// `stdin_text` is used when source is "-". `model_inputs` is the number of model inputs.
expected<std::vector<batch_job>> read_batch_source(const std::string& source, const std::string& stdin_text,
                                                   size_t model_inputs);

// Parsers behind read_batch_source, for tests.
expected<std::vector<batch_job>> parse_batch_list(const std::string& text, const std::string& base_dir,
                                                  const std::string& what);
expected<std::vector<batch_job>> parse_batch_ndjson(const std::string& text, const std::string& what);
// Makes ids file-name safe and unique (in order).
void assign_batch_ids(std::vector<batch_job>* jobs);

}  // namespace gpugrid::cli
