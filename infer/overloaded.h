// Overloaded{lambdas...}: one visitor from a lambda per alternative, for
// std::visit over the op variants (model_format.cpp, model.cpp).
#pragma once

namespace qf::infer {

template <class... Fs>
struct Overloaded : Fs... {
    using Fs::operator()...;
};
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;  // clang 14 lacks C++20's aggregate deduction

}  // namespace qf::infer
