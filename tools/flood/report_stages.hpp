// esockets-flood: --stages in the JSON result and the summary, one entry per stage.
#pragma once

#include <cstdio>

#include "json_writer.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace flood {

// "stages": [...] (nothing without --stages).
void stages_json(Json& j, const Options& o, const Result& r);
void print_stages(FILE* f, const Options& o, const Result& r);

}  // namespace flood
