#pragma once
// String arguments with a fixed set of values (kind="giou", reduction="mean", ...) → an enum, with
// one error text for every op: "cvops.<op>: <name> must be 'a', 'b' or 'c', got 'x'".
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "common/checks.h"

namespace cvops {

template <typename Enum>
using Choices = std::initializer_list<std::pair<std::string_view, Enum>>;

// "'a', 'b' or 'c'" for the choices' names.
template <typename Enum>
std::string describe_choices(Choices<Enum> choices) {
  std::string text;
  size_t i = 0;
  for (const auto& choice : choices) {
    if (i > 0) text += i + 1 == choices.size() ? " or " : ", ";
    text += "'" + std::string(choice.first) + "'";
    ++i;
  }
  return text;
}

template <typename Enum>
Enum parse_choice(const char* op, const char* name, std::string_view value, Choices<Enum> choices) {
  for (const auto& choice : choices) {
    if (choice.first == value) return choice.second;
  }
  CVOPS_CHECK(false, op, name, " must be ", describe_choices(choices), ", got '",
              std::string(value), "'");
  return choices.begin()->second;
}

}  // namespace cvops
