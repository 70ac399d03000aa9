//! The test generators: one test per database or bus, and tests that run only where PostgreSQL or
//! NATS was given when the tests were built (reported as skipped otherwise).

/// Generates, for each named `async fn(Backend)`, a test on SQLite and one on PostgreSQL.
#[macro_export]
macro_rules! each_database {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            $crate::postgres_test! {
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// Generates, for each named `async fn(BusKind)`, a test on the embedded bus and one on JetStream.
#[macro_export]
macro_rules! each_bus {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::BusKind::Embedded).await
            }
            $crate::nats_test! {
                async fn nats() {
                    super::$name($crate::BusKind::Nats).await
                }
            }
        }
    )*};
}

#[cfg(stubs_postgres)]
#[macro_export]
macro_rules! postgres_test {
    ($item:item) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $item
    };
}

#[cfg(not(stubs_postgres))]
#[macro_export]
macro_rules! postgres_test {
    ($item:item) => {
        #[tokio::test]
        #[ignore = "skipped: set STUBS_TEST_DATABASE_URL to run against PostgreSQL"]
        $item
    };
}

#[cfg(all(stubs_postgres, stubs_nats))]
#[macro_export]
macro_rules! distributed_test {
    ($item:item) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $item
    };
}

#[cfg(not(all(stubs_postgres, stubs_nats)))]
#[macro_export]
macro_rules! distributed_test {
    ($item:item) => {
        #[tokio::test]
        #[ignore = "skipped: set STUBS_TEST_DATABASE_URL and STUBS_TEST_NATS_URL to run on PostgreSQL and JetStream"]
        $item
    };
}

#[cfg(stubs_nats)]
#[macro_export]
macro_rules! nats_test {
    ($item:item) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $item
    };
}

#[cfg(not(stubs_nats))]
#[macro_export]
macro_rules! nats_test {
    ($item:item) => {
        #[tokio::test]
        #[ignore = "skipped: set STUBS_TEST_NATS_URL to run against NATS JetStream"]
        $item
    };
}

/// Marks a browser test: run where Chromium and ChromeDriver are installed (decided by this
/// crate's build script), compiled as ignored elsewhere.
#[cfg(stubs_browser)]
#[macro_export]
macro_rules! browser_test {
    ($item:item) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $item
    };
}

#[cfg(not(stubs_browser))]
#[macro_export]
macro_rules! browser_test {
    ($item:item) => {
        #[tokio::test]
        #[ignore = "skipped: install chromium and chromium-driver to run the browser tests"]
        $item
    };
}

/// Marks a browser test of the distributed marketplace: run where Chromium and ChromeDriver are
/// installed and PostgreSQL and JetStream are given, compiled as ignored elsewhere.
#[cfg(all(stubs_browser, stubs_postgres, stubs_nats))]
#[macro_export]
macro_rules! distributed_browser_test {
    ($item:item) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $item
    };
}

#[cfg(not(all(stubs_browser, stubs_postgres, stubs_nats)))]
#[macro_export]
macro_rules! distributed_browser_test {
    ($item:item) => {
        #[tokio::test]
        #[ignore = "skipped: install chromium and chromium-driver, and set STUBS_TEST_DATABASE_URL and STUBS_TEST_NATS_URL, to run the browser tests of the cluster"]
        $item
    };
}
