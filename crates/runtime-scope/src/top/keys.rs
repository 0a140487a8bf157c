//! What each key does to the dashboard's state.

use super::ui::{Chrome, Focus, Popup};
use ratatui::crossterm::event::KeyCode;

/// Applies one key press; true means quit.
pub fn apply(chrome: &mut Chrome, code: KeyCode, control: bool) -> bool {
    match code {
        KeyCode::Char('q') => return true,
        KeyCode::Char('c') if control => return true,
        KeyCode::Esc => chrome.popup = None,
        KeyCode::Char('?') => chrome.popup = Some(Popup::Help),
        KeyCode::Enter => chrome.popup = Some(Popup::Details),
        KeyCode::Char('p') | KeyCode::Char(' ') => chrome.paused = !chrome.paused,
        KeyCode::Char('w') => chrome.snapshot_asked = true,
        KeyCode::Char('s') => {
            chrome.sort = chrome.sort.next();
            chrome.selected = 0;
        }
        KeyCode::Tab | KeyCode::BackTab => {
            chrome.focus = if chrome.focus == Focus::Tasks { Focus::LongPolls } else { Focus::Tasks };
            chrome.selected = 0;
        }
        KeyCode::Down | KeyCode::Char('j') => chrome.selected += 1,
        KeyCode::Up | KeyCode::Char('k') => chrome.selected = chrome.selected.saturating_sub(1),
        _ => {}
    }
    false
}
