// Minimal self-contained JSON parser for the esockets-flood tests (validity + field access).
#pragma once

#include <cctype>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

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
};

class JParser {
public:
    explicit JParser(const std::string& t) : t_(t) {}
    bool parse(JValue& out) {
        if (!value(out)) return false;
        ws();
        return i_ == t_.size();
    }

private:
    void ws() {
        while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\r' || t_[i_] == '\t')) ++i_;
    }
    bool lit(const char* w) {
        std::string s(w);
        if (t_.compare(i_, s.size(), s) != 0) return false;
        i_ += s.size();
        return true;
    }
    bool string(std::string& out) {
        if (i_ >= t_.size() || t_[i_] != '"') return false;
        ++i_;
        while (i_ < t_.size() && t_[i_] != '"') {
            char c = t_[i_++];
            if (static_cast<unsigned char>(c) < 0x20) return false;
            if (c == '\\') {
                if (i_ >= t_.size()) return false;
                char e = t_[i_++];
                switch (e) {
                case '"': case '\\': case '/': out += e; break;
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'u':
                    if (i_ + 4 > t_.size()) return false;
                    out += '?';
                    i_ += 4;
                    break;
                default: return false;
                }
            } else {
                out += c;
            }
        }
        if (i_ >= t_.size()) return false;
        ++i_;
        return true;
    }
    bool value(JValue& v) {
        ws();
        if (i_ >= t_.size()) return false;
        char c = t_[i_];
        if (c == '{') {
            v.kind = JValue::Obj;
            ++i_;
            ws();
            if (i_ < t_.size() && t_[i_] == '}') {
                ++i_;
                return true;
            }
            for (;;) {
                ws();
                std::string k;
                if (!string(k)) return false;
                ws();
                if (i_ >= t_.size() || t_[i_++] != ':') return false;
                if (!value(v.o[k])) return false;
                ws();
                if (i_ >= t_.size()) return false;
                if (t_[i_] == ',') { ++i_; continue; }
                if (t_[i_] == '}') { ++i_; return true; }
                return false;
            }
        }
        if (c == '[') {
            v.kind = JValue::Arr;
            ++i_;
            ws();
            if (i_ < t_.size() && t_[i_] == ']') {
                ++i_;
                return true;
            }
            for (;;) {
                v.a.emplace_back();
                if (!value(v.a.back())) return false;
                ws();
                if (i_ >= t_.size()) return false;
                if (t_[i_] == ',') { ++i_; continue; }
                if (t_[i_] == ']') { ++i_; return true; }
                return false;
            }
        }
        if (c == '"') {
            v.kind = JValue::Str;
            return string(v.s);
        }
        if (lit("true")) { v.kind = JValue::Bool; v.b = true; return true; }
        if (lit("false")) { v.kind = JValue::Bool; return true; }
        if (lit("null")) { v.kind = JValue::Null; return true; }
        // number: -?digits(.digits)?([eE][+-]?digits)?
        std::size_t st = i_;
        if (t_[i_] == '-') ++i_;
        std::size_t d0 = i_;
        while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
        if (i_ == d0) return false;
        if (i_ < t_.size() && t_[i_] == '.') {
            ++i_;
            std::size_t f0 = i_;
            while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
            if (i_ == f0) return false;
        }
        if (i_ < t_.size() && (t_[i_] == 'e' || t_[i_] == 'E')) {
            ++i_;
            if (i_ < t_.size() && (t_[i_] == '+' || t_[i_] == '-')) ++i_;
            std::size_t e0 = i_;
            while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
            if (i_ == e0) return false;
        }
        v.kind = JValue::Num;
        v.n = std::strtod(t_.substr(st, i_ - st).c_str(), nullptr);
        return true;
    }
    const std::string& t_;
    std::size_t i_ = 0;
};

}  // namespace floodtest
