//! README.md's kernel support table, written from a matrix run: each
//! kernel the guests booted, how many of the end-to-end checks passed
//! there, and what `runtime-scope check` said that kernel lacks.

use super::guest::Report;
use std::path::Path;

const START: &str = "<!-- kernel-table: written by `cargo xtask test-kernels` from its run; edits here are overwritten -->";
const END: &str = "<!-- kernel-table end -->";

pub struct Row {
    /// Which distribution ships it, or "this machine".
    pub kernel: &'static str,
    /// The Debian package and version booted; None for the host.
    pub package: Option<String>,
    pub report: Report,
    pub passed: usize,
    pub total: usize,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!("{START}\n| Linux | as shipped in | end-to-end checks | lacks (what runtime-scope does without it) |\n|---|---|---|---|\n");
    for row in rows {
        let release = row.report.kernel.as_deref().unwrap_or("(did not boot)");
        let shipped = match &row.package {
            Some(package) => {
                let (name, version) = package.split_once(' ').unwrap_or((package, ""));
                format!("{} (`{name}` {version})", row.kernel)
            }
            None => row.kernel.to_string(),
        };
        let checks = if row.package.is_none() {
            "the whole test suite (`cargo xtask test`)".to_string()
        } else {
            let failed: Vec<&str> = row.report.tests.iter().filter(|t| !t.passed()).map(|t| t.name.as_str()).collect();
            if failed.is_empty() && row.passed == row.total {
                format!("all {} pass", row.total)
            } else {
                format!("{} of {} pass; failed: {}", row.passed, row.total, failed.join(", "))
            }
        };
        let lacks: Vec<String> = row.report.features().into_iter().filter(|f| !f.0).map(|f| f.2).collect();
        let lacks = if lacks.is_empty() { "nothing".to_string() } else { lacks.join("<br>") };
        out += &format!("| {} | {} | {} | {} |\n", cell(release), cell(&shipped), cell(&checks), cell(&lacks));
    }
    out + END
}

/// Replaces the table between the markers in `readme`.
pub fn update_readme(readme: &Path, rows: &[Row]) -> Result<(), String> {
    let text = std::fs::read_to_string(readme).map_err(|e| format!("reading {}: {e}", readme.display()))?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        return Err(format!("{} has no kernel table markers ({START} … {END})", readme.display()));
    };
    let updated = format!("{}{}{}", &text[..start], render(rows), &text[end + END.len()..]);
    std::fs::write(readme, updated).map_err(|e| format!("writing {}: {e}", readme.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_kernel_with_its_checks_and_what_it_lacks() {
        let guest = Report::parse(
            "rscope-guest: kernel 5.10.0-32-cloud-amd64\nrscope-guest: check-exit 0\n\
             rscope-guest: check   no   uprobe-cookies     BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out\n\
             rscope-guest: check   yes  task-pt-regs       bpf_task_pt_regs (Linux 5.15+)\n\
             rscope-guest: run a::b\ntest result: ok. 1 passed\nrscope-guest: result a::b 0\nrscope-guest: done\n",
        );
        let host = Report { kernel: Some("6.18.44".into()), check: vec!["  yes  uprobe-cookies  x".into()], ..Default::default() };
        let rows = [
            Row { kernel: "Debian 11", package: Some("linux-image-5.10.0-32-cloud-amd64-unsigned 5.10.223-1".into()), report: guest, passed: 1, total: 1 },
            Row { kernel: "this machine", package: None, report: host, passed: 0, total: 0 },
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert_eq!(
            lines[3],
            "| 5.10.0-32-cloud-amd64 | Debian 11 (`linux-image-5.10.0-32-cloud-amd64-unsigned` 5.10.223-1) | all 1 pass | BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out |"
        );
        assert_eq!(lines[4], "| 6.18.44 | this machine | the whole test suite (`cargo xtask test`) | nothing |");

        let dir = std::env::temp_dir().join(format!("xtask-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let readme = dir.join("README.md");
        std::fs::write(&readme, format!("# x\nbefore\n{START}\nold table\n{END}\nafter\n")).unwrap();
        update_readme(&readme, &rows).unwrap();
        let text = std::fs::read_to_string(&readme).unwrap();
        assert!(text.starts_with("# x\nbefore\n") && text.ends_with(&format!("{END}\nafter\n")) && !text.contains("old table"), "{text}");
        std::fs::write(&readme, "no markers").unwrap();
        assert!(update_readme(&readme, &rows).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
