"""Regenerates the PDF and DOCX samples of the demo corpus (needs fpdf2 and python-docx).

    .venv/bin/python examples/make_binary_samples.py
"""

from pathlib import Path

from docx import Document
from fpdf import FPDF

HERE = Path(__file__).parent / "corpus"

VOLCANO_PAGES = [
    ("Volcanoes", [
        "A volcano is an opening in a planet's crust through which molten rock, ash and gases escape. "
        "Molten rock below the surface is called magma; once it erupts it is called lava.",
        "Shield volcanoes such as Mauna Loa in Hawaii are built from fluid basaltic lava and have broad, "
        "gentle slopes. Stratovolcanoes such as Mount Fuji are steep cones of alternating lava and ash layers.",
    ]),
    ("Famous eruptions", [
        "The eruption of Mount Vesuvius in 79 AD buried the Roman towns of Pompeii and Herculaneum under "
        "metres of ash and pumice.",
        "The 1815 eruption of Mount Tambora in Indonesia was the largest in recorded history. The ash it "
        "threw into the stratosphere cooled the northern hemisphere, and 1816 became known as the "
        "Year Without a Summer.",
    ]),
]


def make_pdf(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title("Volcanoes of the World")
    pdf.set_creation_date(__import__("datetime").datetime(2023, 5, 1, tzinfo=__import__("datetime").timezone.utc))
    for heading, paragraphs in VOLCANO_PAGES:
        pdf.add_page()
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 8, "Volcanoes of the World - ragline demo", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 16)
        pdf.cell(0, 12, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=12)
        for para in paragraphs:
            pdf.multi_cell(0, 7, para)
            pdf.ln(3)
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    doc = Document()
    doc.core_properties.title = "Bread Baking Basics"
    doc.add_heading("Bread Baking Basics", level=1)
    doc.add_heading("Ingredients", level=2)
    doc.add_paragraph("A basic loaf needs only flour, water, salt and yeast. Bread flour has more protein "
                      "than cake flour, which lets it form more gluten and a chewier crumb.")
    table = doc.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Ingredient", "Baker's percentage"
    for name, pct in [("Flour", "100%"), ("Water", "65-75%"), ("Salt", "2%"), ("Instant yeast", "1%")]:
        row = table.add_row().cells
        row[0].text, row[1].text = name, pct
    doc.add_heading("Proofing", level=2)
    doc.add_paragraph("Dough rises because yeast ferments sugars and releases carbon dioxide, which the gluten "
                      "network traps. A first rise at room temperature takes one to two hours; a cold rise in "
                      "the refrigerator overnight develops more flavour.")
    doc.save(str(path))


if __name__ == "__main__":
    make_pdf(HERE / "volcanoes.pdf")
    make_docx(HERE / "bread.docx")
    print("wrote", HERE / "volcanoes.pdf", HERE / "bread.docx")
