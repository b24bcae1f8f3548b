//! Processes of the machine, as `/proc` shows them.

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}

/// The parent of process `pid`.
pub fn parent(pid: i32) -> anyhow::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit(") ").next().unwrap_or_default();
    Ok(after_name.split(' ').nth(1).unwrap_or_default().parse()?)
}

/// How many live (not zombie) processes run as user id `uid`.
pub fn processes_of(uid: u32) -> usize {
    let (live, _zombies) = count(uid);
    live
}

/// How many processes user id `uid` has, zombies (which count against its process limit
/// until reaped) included.
pub fn all_processes_of(uid: u32) -> usize {
    let (live, zombies) = count(uid);
    live + zombies
}

/// Live and zombie processes of `uid`.
fn count(uid: u32) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let mut counts = (0, 0);
    for status in entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
    {
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok());
        if owner != Some(uid) {
            continue;
        }
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("zombie"))
        {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    counts
}
