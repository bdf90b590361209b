#!/usr/bin/python3
"""Drives `snap ui` in headless Chromium over WebDriver (Debian's chromium,
chromium-driver and python3-selenium). Run by tests/e2e/ui.rs, which made
the repository, started the UI and checks the restored tree afterwards.

Arguments (JSON on argv[1]): url (with ?token=), snapshots (how many the
repository holds), source (a backed-up directory), subdir (a directory
below it), file (a file in subdir), restore_target, backup_path,
screenshots (directory), downloads (directory), profile (a profile of the
config file the UI reads, whose daemon state records a failed backup).
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

args = json.loads(sys.argv[1])
base = args["url"].split("/?")[0]
os.makedirs(args["screenshots"], exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
    options.add_argument(flag)
options.add_experimental_option("prefs", {
    "download.default_directory": args["downloads"],
    "download.prompt_for_download": False,
    "safebrowsing.enabled": False,
})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(60)
wait = WebDriverWait(driver, 90)


def check(cond, what):
    if not cond:
        page = driver.find_element(By.TAG_NAME, "body").text[:800]
        raise AssertionError(what + " (at " + driver.current_url + "):\n" + page)
    print("ok:", what, flush=True)


def shots(name):
    """Both widths: desktop 1280x800 and phone 390x844."""
    for label, (w, h) in [("desktop", (1280, 800)), ("phone", (390, 844))]:
        driver.set_window_size(w, h)
        driver.save_screenshot(os.path.join(args["screenshots"], f"{name}-{label}.png"))
    driver.set_window_size(1280, 800)


def wait_for(cond):
    """What `cond` returns once it is truthy, or [] after the wait's timeout."""
    try:
        return wait.until(cond)
    except Exception:
        return []


def job_or_result():
    # The job page's script replaces its progress with the result: wait for
    # either rather than look once (a page caught between the two has none).
    try:
        return wait.until(lambda d: d.find_elements(By.ID, "job") or d.find_elements(By.ID, "result"))
    except Exception:
        return []


def wait_result():
    wait.until(lambda d: d.find_elements(By.ID, "result") or "Failed" in d.page_source)
    check(driver.find_elements(By.ID, "result"), "the job finished: " + driver.find_element(By.ID, "job-state").text
          if not driver.find_elements(By.ID, "result") else "the job finished")


try:
    # Log in: the token sets the session cookie and leaves the URL.
    driver.get(args["url"])
    check(driver.title.startswith("Dashboard"), "logged in with the token")
    check("token=" not in driver.current_url, "the token left the address bar")
    cookies = driver.get_cookies()
    check(any(c.get("httpOnly") and c.get("sameSite") == "Strict" for c in cookies),
          "the session cookie is HttpOnly and SameSite=Strict")
    shots("dashboard")

    # Snapshots table.
    driver.get(base + "/snapshots")
    rows = driver.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr")
    check(len(rows) == args["snapshots"], f"the table lists the {args['snapshots']} snapshots")
    driver.find_element(By.LINK_TEXT, "Size").click()
    check(wait_for(lambda d: "sort=size" in d.current_url), "sorting by size")
    shots("snapshots")

    # Browse down to the source directory, into its subdirectory, download a file.
    rows[0]  # the newest snapshot
    driver.get(base + "/snapshots")
    driver.find_element(By.CSS_SELECTOR, "#snapshots tbody tr td a").click()
    check(wait_for(lambda d: d.find_elements(By.ID, "entries")), "the snapshot's root directory")
    for name in [c for c in args["source"].split("/") if c]:
        driver.find_element(By.LINK_TEXT, name + "/").click()
    shots("browse")
    driver.find_element(By.LINK_TEXT, args["subdir"] + "/").click()
    check(wait_for(lambda d: d.find_elements(By.LINK_TEXT, args["file"])), "browsed into " + args["subdir"])
    driver.find_element(By.LINK_TEXT, args["file"]).click()
    check(wait_for(lambda d: d.title.startswith("File")), "the file's details")
    shots("file")
    driver.find_element(By.ID, "download").click()
    target = os.path.join(args["downloads"], args["file"])
    deadline = time.time() + 60
    while not os.path.exists(target) and time.time() < deadline:
        time.sleep(0.2)
    with open(os.path.join(args["source"], args["subdir"], args["file"]), "rb") as f:
        expected = f.read()
    got = open(target, "rb").read() if os.path.exists(target) else None
    check(got == expected, f"the downloaded {args['file']} has the source's {len(expected)} bytes")

    # Restore wizard into a new directory.
    driver.get(base + "/restore")
    driver.find_element(By.ID, "paths").send_keys(args["source"])
    driver.find_element(By.ID, "target-other").click()
    driver.find_element(By.ID, "target").send_keys(args["restore_target"])
    Select(driver.find_element(By.ID, "overwrite")).select_by_value("if-changed")
    shots("restore-choose")
    driver.find_element(By.ID, "preview").click()
    check(wait_for(lambda d: d.find_elements(By.ID, "plan")), "the restore preview lists the plan")
    totals = driver.find_element(By.ID, "totals").text
    check("new" in totals, "the preview counts new entries: " + totals.replace("\n", "; "))
    check(not os.path.exists(args["restore_target"]), "the preview restored nothing")
    shots("restore-preview")
    driver.find_element(By.ID, "run").click()
    check(job_or_result(), "the restore runs as a job")
    wait_result()
    check("Restored" in driver.find_element(By.ID, "result").text, "the restore finished")
    check(driver.find_elements(By.ID, "safety"), "the result names the safety snapshot (or that none was needed)")
    shots("restore-done")

    # Back up from the dashboard; the new snapshot appears.
    driver.get(base + "/")
    paths = driver.find_element(By.ID, "paths")
    paths.clear()
    paths.send_keys(args["backup_path"])
    driver.find_element(By.CSS_SELECTOR, "form[action='/backup'] button").click()
    wait_result()
    new_id = driver.find_element(By.ID, "new-snapshot").text
    shots("backup-done")
    driver.get(base + "/snapshots")
    rows = driver.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr")
    check(len(rows) == args["snapshots"] + 1, "the table has one more snapshot")
    check(new_id in rows[0].text, f"the new snapshot {new_id} is the newest row")

    # Diff of the last two, forget preview, verify, schedules.
    driver.get(base + "/diff")
    driver.find_element(By.CSS_SELECTOR, "form[action='/diff'] button").click()
    # A click does not wait for the page it loads: wait for the result.
    check(wait_for(lambda d: d.find_elements(By.ID, "diff-stats")), "the diff of the two newest snapshots")
    shots("diff")
    driver.get(base + "/forget?last=1")
    check("remove" in driver.page_source, "the forget preview shows what it removes")
    shots("forget-preview")
    driver.get(base + "/verify")
    driver.find_element(By.CSS_SELECTOR, "form[action='/verify'] button").click()
    wait_result()
    check("No problems found" in driver.find_element(By.ID, "result").text, "verify found no problems")
    shots("verify")
    # Schedules: the profile's schedule, retention and last run; a valid
    # edit is saved, an invalid one refused with the reason.
    profile = args["profile"]
    driver.get(base + "/schedules")
    check(driver.find_elements(By.ID, "profile-" + profile), "schedules: the profile " + profile)
    check("create exited with 1" in driver.page_source, "schedules: the last run's error")
    shots("schedules")
    keep = driver.find_element(By.ID, profile + "-retention-keep-last")
    keep.clear()
    keep.send_keys("4")
    driver.find_element(By.CSS_SELECTOR, f"#profile-{profile} form button").click()
    check(wait_for(lambda d: d.find_elements(By.ID, "saved")), "schedules: the edit was saved")
    check(driver.find_element(By.ID, profile + "-retention-keep-last").get_attribute("value") == "4",
          "schedules: the page shows the saved keep-last")
    backup = driver.find_element(By.ID, profile + "-schedule-backup")
    backup.clear()
    backup.send_keys("every 0s")
    driver.find_element(By.CSS_SELECTOR, f"#profile-{profile} form button").click()
    refused = wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".refused"))
    check(refused and "at least 1s" in refused[0].text, "schedules: an invalid schedule is refused")
    shots("schedules-refused")
    driver.get(base + "/")
    check(driver.find_elements(By.ID, "profiles"), "the dashboard lists the profile's next run")
    shots("dashboard-profiles")
    print("browser test passed", flush=True)
finally:
    driver.quit()
