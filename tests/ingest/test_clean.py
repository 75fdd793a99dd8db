from ragline.ingest.clean import clean_prose, dehyphenate, normalize_whitespace, remove_repeated_lines


class TestNormalizeWhitespace:
    def test_collapses_runs_of_spaces_and_tabs(self):
        assert normalize_whitespace("a   b\t\tc \t d") == "a b c d"

    def test_strips_trailing_spaces_and_line_indent(self):
        assert normalize_whitespace("  one   \n\ttwo\t \n") == "one\ntwo"

    def test_at_most_one_blank_line(self):
        assert normalize_whitespace("a\n\n\n\n\nb\n \n \n\nc") == "a\n\nb\n\nc"

    def test_blank_lines_at_ends_removed(self):
        assert normalize_whitespace("\n\n  \nbody\n\n\n") == "body"

    def test_nbsp_and_other_spaces_become_space(self):
        assert normalize_whitespace("10\u00a0kg and 5\u202fm\u3000x") == "10 kg and 5 m x"

    def test_control_characters_removed_but_newline_and_tab_kept(self):
        text = "a\x00b\x07c\x1bd\x7fe\x85f\tg"
        # \x85 (NEL) is a line break; other C0/C1 controls go
        assert normalize_whitespace(text, collapse=False) == "abcde\nf\tg"

    def test_zero_width_and_bom_removed(self):
        assert normalize_whitespace("\ufeffzero\u200bwidth\u00ad") == "zerowidth"

    def test_crlf_and_cr_become_lf(self):
        assert normalize_whitespace("a\r\nb\rc") == "a\nb\nc"

    def test_form_feed_is_a_line_break(self):
        assert normalize_whitespace("page one\x0cpage two") == "page one\npage two"

    def test_keep_indent(self):
        text = "- item\n    - nested   item\n\n        code  block"
        assert normalize_whitespace(text, keep_indent=True) == "- item\n    - nested item\n\n        code block"

    def test_collapse_false_keeps_inner_spacing(self):
        code = "def f():\n    x  =  1   \n\n\n\n    return x"
        assert normalize_whitespace(code, collapse=False) == "def f():\n    x  =  1\n\n    return x"


class TestDehyphenate:
    def test_joins_word_broken_across_lines(self):
        assert dehyphenate("the retrie-\nval step") == "the retrieval step"

    def test_spaces_around_the_break_tolerated(self):
        assert dehyphenate("retrie- \n  val") == "retrieval"

    def test_real_hyphens_inside_a_line_kept(self):
        text = "a state-of-the-art and well-known method"
        assert dehyphenate(text) == text

    def test_compound_broken_at_its_hyphen_keeps_it(self):
        assert dehyphenate("a state-of-the-\nart method") == "a state-of-the-art method"

    def test_capitalised_next_word_not_joined(self):
        assert dehyphenate("Smith-\nJones") == "Smith-\nJones"

    def test_numbers_not_joined(self):
        assert dehyphenate("pages 10-\n12") == "pages 10-\n12"
        assert dehyphenate("COVID-\n19") == "COVID-\n19"

    def test_list_dash_at_line_start_untouched(self):
        text = "items:\n- one\n- two"
        assert dehyphenate(text) == text

    def test_soft_hyphen_at_break(self):
        assert dehyphenate("infor\u00ad\nmation") == "information"


class TestRemoveRepeatedLines:
    def test_header_and_page_number_footer_removed(self):
        bodies = ["Alpha starts here.\nIt goes on.", "Beta follows.\nStill beta.", "Gamma now.\nAnd more.",
                  "Delta ends.\nThe end."]
        pages = [f"ACME Report\n{body}\nPage {n} of 4" for n, body in enumerate(bodies, start=1)]
        assert remove_repeated_lines(pages) == bodies

    def test_bare_page_numbers_removed(self):
        pages = [f"Chapter text {c}\n{n}" for n, c in zip(range(7, 11), "abcd")]
        assert remove_repeated_lines(pages) == ["Chapter text a", "Chapter text b", "Chapter text c", "Chapter text d"]

    def test_case_and_spacing_ignored(self):
        pages = ["Running  Head\nalpha", "running head\nbeta", "RUNNING HEAD\ngamma"]
        assert remove_repeated_lines(pages) == ["alpha", "beta", "gamma"]

    def test_line_on_few_pages_kept(self):
        pages = ["Intro\none", "Other\ntwo", "Third\nthree", "Intro\nfour", "Fifth\nfive"]
        assert remove_repeated_lines(pages) == pages

    def test_repeated_line_in_the_middle_of_a_page_kept(self):
        pages = [f"Top {c}\nfirst\nsame line\nlast\nBottom {c}x" for c in "abc"]
        assert remove_repeated_lines(pages, edge_lines=1) == pages

    def test_single_page_untouched(self):
        assert remove_repeated_lines(["Header\nbody\nPage 1"]) == ["Header\nbody\nPage 1"]

    def test_empty_pages_tolerated(self):
        pages = ["Head\nA", "", "Head\nB", "Head\nC"]
        assert remove_repeated_lines(pages) == ["A", "", "B", "C"]


def test_clean_prose_dehyphenates_then_normalizes():
    assert clean_prose("  The retrie-\n  val\u00a0 works.\n\n\n\nNext  para. ") == "The retrieval works.\n\nNext para."
