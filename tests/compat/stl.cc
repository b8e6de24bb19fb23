// Compiled by g++ inside scripts/compat: the standard containers, strings,
// shared_ptr, std::regex (allocation-heavy) and iostreams.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

struct Shape {
    virtual ~Shape() = default;
    virtual double area() const = 0;
    virtual std::string name() const = 0;
};
struct Rect : Shape {
    double w, h;
    Rect(double w_, double h_) : w(w_), h(h_) {}
    double area() const override { return w * h; }
    std::string name() const override { return "rect"; }
};
struct Tri : Shape {
    double b, h;
    Tri(double b_, double h_) : b(b_), h(h_) {}
    double area() const override { return b * h / 2; }
    std::string name() const override { return "tri"; }
};

int main()
{
    std::vector<std::shared_ptr<Shape>> shapes;
    for (int i = 0; i < 20000; i++) {
        if (i % 3) shapes.push_back(std::make_shared<Rect>(i % 17, i % 13 + 1));
        else shapes.push_back(std::make_shared<Tri>(i % 19, i % 7 + 2));
    }
    std::map<std::string, double> area_by_kind;
    for (const auto &s : shapes) area_by_kind[s->name()] += s->area();
    for (const auto &[k, v] : area_by_kind) std::cout << k << ' ' << std::fixed << std::setprecision(1) << v << '\n';

    std::unordered_map<std::string, int> freq;
    std::ostringstream text;
    for (int i = 0; i < 30000; i++) text << "w" << (i * 7919 % 1009) << (i % 5 ? ' ' : '\n');
    std::istringstream in(text.str());
    std::string w;
    while (in >> w) freq[w]++;
    std::vector<std::pair<std::string, int>> v(freq.begin(), freq.end());
    std::sort(v.begin(), v.end(), [](auto &a, auto &b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
    std::cout << freq.size() << " distinct; top:";
    for (int i = 0; i < 5; i++) std::cout << ' ' << v[i].first << '=' << v[i].second;
    std::cout << '\n';

    std::regex re(R"((\w+)@(\w+)\.(com|org|net))");
    std::string mail;
    for (int i = 0; i < 2000; i++) mail += "user" + std::to_string(i) + "@host" + std::to_string(i % 50) + (i % 3 ? ".com " : ".org ");
    std::set<std::string> hosts;
    long matches = 0;
    for (auto it = std::sregex_iterator(mail.begin(), mail.end(), re); it != std::sregex_iterator(); ++it) {
        matches++;
        hosts.insert((*it)[2].str() + "." + (*it)[3].str());
    }
    std::cout << matches << " addresses, " << hosts.size() << " hosts, first " << *hosts.begin() << '\n';
    std::string replaced = std::regex_replace(mail.substr(0, 200), re, "<$2>");
    std::cout << replaced.substr(0, 60) << '\n';

    std::vector<long> big(1 << 20);
    std::iota(big.begin(), big.end(), 0);
    std::cout << "sum " << std::accumulate(big.begin(), big.end(), 0L) << '\n';
    return 0;
}
