// esockets — the whole public API in one include.
#pragma once

#include "esockets/connection.hpp"
#include "esockets/decoder.hpp"
#include "esockets/group.hpp"
#include "esockets/handler.hpp"
#include "esockets/listener.hpp"
#include "esockets/metrics.hpp"
#include "esockets/options.hpp"
#include "esockets/proxy.hpp"
#include "esockets/server.hpp"
#include "esockets/stats.hpp"
#include "esockets/supervisor.hpp"
#include "esockets/types.hpp"
#include "esockets/version.hpp"
#include "esockets/warning.hpp"
