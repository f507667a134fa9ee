// JSON for the esockets-flood tests (and tests/reshard_test.cpp): parsing is nlohmann-json's
// (Debian nlohmann-json3-dev); JValue is a small read-only view with the field access the tests
// use (kind, b, n, s, a, o, has(), operator[], num()).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace floodtest {

struct JValue {
    enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
    bool b = false;
    double n = 0;
    std::string s;
    std::vector<JValue> a;
    std::map<std::string, JValue> o;

    bool has(const std::string& k) const { return kind == Obj && o.count(k) > 0; }
    const JValue& operator[](const std::string& k) const {
        static const JValue null;
        auto it = o.find(k);
        return it == o.end() ? null : it->second;
    }
    double num() const { return n; }

    static JValue from(const nlohmann::json& j) {
        JValue v;
        switch (j.type()) {
        case nlohmann::json::value_t::boolean: v.kind = Bool; v.b = j.get<bool>(); break;
        case nlohmann::json::value_t::number_integer:
        case nlohmann::json::value_t::number_unsigned:
        case nlohmann::json::value_t::number_float: v.kind = Num; v.n = j.get<double>(); break;
        case nlohmann::json::value_t::string: v.kind = Str; v.s = j.get<std::string>(); break;
        case nlohmann::json::value_t::array:
            v.kind = Arr;
            for (auto& e : j) v.a.push_back(from(e));
            break;
        case nlohmann::json::value_t::object:
            v.kind = Obj;
            for (auto& [k, e] : j.items()) v.o.emplace(k, from(e));
            break;
        default: break;
        }
        return v;
    }
};

class JParser {
public:
    explicit JParser(const std::string& t) : t_(t) {}
    bool parse(JValue& out) {
        nlohmann::json j = nlohmann::json::parse(t_, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) return false;
        out = JValue::from(j);
        return true;
    }

private:
    const std::string& t_;
};

}  // namespace floodtest
